/**
 * POSIX attributes ↔ S3 user metadata, in the conventions of s3fs and rclone so that each tool reads the
 * others' objects: `mode` (decimal st_mode with the type bits, s3fs: S_IFLNK marks a symlink object whose body
 * is the target), `uid`, `gid` (s3fs), `mtime` (seconds since the epoch, fractional allowed: rclone writes
 * nanoseconds, s3fs whole seconds), `xattr` (s3fs: urlencode(JSON {name: base64(value)})).
 * Objects without them (aws CLI, SDK) get defaults: 0644 files, 0755 dirs, the mount owner, LastModified.
 */
import type { ObjectMeta } from '../../storage/driver.js';
import type { FileAttrs } from '../../cache/cached-file.js';
import type { FileInfo, FileKind } from '../cbfs/events.js';

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const DIR_CONTENT_TYPE = 'application/x-directory';
/** S3 allows 2 KiB of user metadata per object (names and values): the bound on extended attributes. */
export const USER_META_MAX = 2048;

export interface Owner {
  uid: number;
  gid: number;
}

const TYPE_BITS: Record<FileKind, number> = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK };

/** `withMtime` false: no mtime header (a stream upload, started before the last write: LastModified stands for it). */
export function encodeMeta(kind: FileKind, attrs: FileAttrs, withMtime = true): ObjectMeta {
  const secs = attrs.mtimeMs / 1000;
  const meta: ObjectMeta = {
    mode: String(TYPE_BITS[kind] | (attrs.mode & 0o7777)),
    uid: String(attrs.uid),
    gid: String(attrs.gid),
  };
  if (withMtime) meta.mtime = Number.isInteger(secs) ? String(secs) : secs.toFixed(3);
  if (attrs.xattrs) meta.xattr = attrs.xattrs;
  return meta;
}

/**
 * What an object uploaded from the vault carries: a key ending in `/` is a directory's marker (mkdir journals it
 * and the write-back queue uploads it like a file), a record whose mode keeps S_IFLNK a symlink (symlink journals
 * it; its data is the target), anything else a file. A marker holds attributes only: one already in storage
 * (another client's mkdir, or an earlier attempt of ours) is overwritten, never adopted for its bytes (every marker
 * has the same, none) nor kept as a conflict.
 */
export function objectMetaFor(attrs: FileAttrs, key: string): { meta: ObjectMeta; contentType?: string; replaces?: boolean } {
  if (key.endsWith('/')) return { meta: encodeMeta('dir', attrs), contentType: DIR_CONTENT_TYPE, replaces: true };
  return { meta: encodeMeta((attrs.mode & S_IFMT) === S_IFLNK ? 'symlink' : 'file', attrs) };
}

/** Bytes of user metadata S3 counts for these headers. */
export function metaBytes(meta: ObjectMeta): number {
  let n = 0;
  for (const [k, v] of Object.entries(meta)) n += Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}

function intOr(value: string | undefined, fallback: number): number {
  if (value === undefined || !/^\d+$/.test(value.trim())) return fallback;
  return Number(value);
}

/** `kind` is what the listing says (an object or a prefix); the mode's type bits can make an object a symlink. */
export function decodeMeta(kind: FileKind, size: number, lastModified: Date, meta: ObjectMeta | undefined, owner: Owner): FileInfo {
  const m = meta ?? {};
  const mtime = Number(m.mtime);
  const rawMode = intOr(m.mode, -1);
  const finalKind: FileKind = kind === 'file' && rawMode >= 0 && (rawMode & S_IFMT) === S_IFLNK ? 'symlink' : kind;
  return {
    kind: finalKind,
    size,
    mode: rawMode >= 0 ? rawMode & 0o7777 : kind === 'dir' ? 0o755 : 0o644,
    uid: intOr(m.uid, owner.uid),
    gid: intOr(m.gid, owner.gid),
    mtimeMs: Number.isFinite(mtime) && m.mtime !== undefined && m.mtime !== '' ? Math.round(mtime * 1000) : lastModified.getTime(),
    xattrs: m.xattr ?? null,
  };
}

/** s3fs's `xattr` header → name → value. A value that does not parse is reported as no attributes. */
export function decodeXattrs(encoded: string | null | undefined): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  if (!encoded) return out;
  let json: unknown;
  try {
    json = JSON.parse(decodeURIComponent(encoded));
  } catch {
    try {
      json = JSON.parse(encoded);
    } catch {
      return out;
    }
  }
  if (json && typeof json === 'object') {
    for (const [k, v] of Object.entries(json as Record<string, unknown>)) if (typeof v === 'string') out.set(k, Buffer.from(v, 'base64'));
  }
  return out;
}

export function encodeXattrs(values: Map<string, Buffer>): string | null {
  if (!values.size) return null;
  const obj: Record<string, string> = {};
  for (const [k, v] of [...values].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) obj[k] = v.toString('base64');
  return encodeURIComponent(JSON.stringify(obj));
}
