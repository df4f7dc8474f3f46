/**
 * POSIX attributes ↔ S3 user metadata, in the conventions of s3fs and rclone so that each tool reads the
 * others' objects: `mode` (decimal st_mode with the type bits, s3fs), `uid`, `gid` (s3fs), `mtime` (seconds
 * since the epoch, fractional allowed: rclone writes nanoseconds, s3fs whole seconds).
 * Objects without them (aws CLI, SDK) get defaults: 0644 files, 0755 dirs, the mount owner, LastModified.
 */
import type { ObjectMeta } from '../../storage/driver.js';
import type { FileAttrs } from '../../cache/cached-file.js';
import type { FileInfo, FileKind } from '../cbfs/events.js';

export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const DIR_CONTENT_TYPE = 'application/x-directory';

export interface Owner {
  uid: number;
  gid: number;
}

export function encodeMeta(kind: FileKind, attrs: FileAttrs): ObjectMeta {
  const secs = attrs.mtimeMs / 1000;
  return {
    mode: String((kind === 'dir' ? S_IFDIR : S_IFREG) | (attrs.mode & 0o7777)),
    uid: String(attrs.uid),
    gid: String(attrs.gid),
    mtime: Number.isInteger(secs) ? String(secs) : secs.toFixed(3),
  };
}

function intOr(value: string | undefined, fallback: number): number {
  if (value === undefined || !/^\d+$/.test(value.trim())) return fallback;
  return Number(value);
}

export function decodeMeta(kind: FileKind, size: number, lastModified: Date, meta: ObjectMeta | undefined, owner: Owner): FileInfo {
  const m = meta ?? {};
  const mtime = Number(m.mtime);
  return {
    kind,
    size,
    mode: intOr(m.mode, kind === 'dir' ? 0o755 : 0o644) & 0o7777,
    uid: intOr(m.uid, owner.uid),
    gid: intOr(m.gid, owner.gid),
    mtimeMs: Number.isFinite(mtime) && m.mtime !== undefined && m.mtime !== '' ? Math.round(mtime * 1000) : lastModified.getTime(),
  };
}
