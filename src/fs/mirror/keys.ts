/**
 * Paths ↔ S3 keys. A mount path "/a/b" is the key "a/b" (the driver adds the mount's prefix); the directory
 * "/a" lists the key prefix "a/"; the root lists "". Limits: a name over 255 bytes or a key over 1024 bytes
 * is ENAMETOOLONG.
 *
 * Odd keys (docs/SEMANTICS.md "Odd keys"): a key segment that cannot be a file name is shown under a reserved
 * alias that maps back to it, so no object is hidden:
 *   ""  (a//b, /x)  → .s3vault~empty      "." → .s3vault~dot      ".." → .s3vault~dotdot
 *   longer than 255 bytes → .s3vault~long~<hash> (resolved through the directory's listing)
 *   a file `a` next to a directory `a/` → the directory is `a`, the file `a.s3vault~file`
 * Names containing ".s3vault~" are reserved: creating one fails with EINVAL.
 */
import { createHash } from 'node:crypto';
import { E, FsError } from '../errors.js';

export const NAME_MAX = 255;
export const KEY_MAX = 1024;
export const RESERVED = '.s3vault~';
const EMPTY = '.s3vault~empty';
const DOT = '.s3vault~dot';
const DOTDOT = '.s3vault~dotdot';
const SHADOWED = '.s3vault~file';
const LONG = '.s3vault~long~';

/** Long aliases seen in listings → the segment (and whether it names the shadowed file). */
const longNames = new Map<string, { segment: string; shadowed: boolean }>();

/** Forget every long alias learned (what a new process starts with). */
export function forgetLongAliases(): void {
  longNames.clear();
}

function longAlias(segment: string, shadowed: boolean): string {
  const alias = LONG + createHash('sha256').update(shadowed ? `${segment}\0file` : segment).digest('hex').slice(0, 32);
  longNames.set(alias, { segment, shadowed });
  return alias;
}

/** The name a key segment is shown under. */
export function segmentName(segment: string): string {
  if (segment === '') return EMPTY;
  if (segment === '.') return DOT;
  if (segment === '..') return DOTDOT;
  if (Buffer.byteLength(segment) > NAME_MAX) return longAlias(segment, false);
  return segment;
}

/** The name of a file whose name a directory also has. */
export function shadowedName(segment: string): string {
  const name = segmentName(segment) + SHADOWED;
  return Buffer.byteLength(name) > NAME_MAX ? longAlias(segment, true) : name;
}

/** Is this name an alias (something the listing shows for an odd key)? */
export function isAlias(name: string): boolean {
  return name.includes(RESERVED);
}

/** The path names the file shadowed by a same-named directory. */
export function isShadowedPath(path: string): boolean {
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (name.endsWith(SHADOWED)) return true;
  return name.startsWith(LONG) && longNames.get(name)?.shadowed === true;
}

/** An alias that only a listing can resolve, not seen yet: list the parent first. */
export class UnresolvedAlias extends FsError {}

function decodeSegment(name: string, last: boolean, path: string): string {
  if (!name.includes(RESERVED)) return name;
  if (name === EMPTY) return '';
  if (name === DOT) return '.';
  if (name === DOTDOT) return '..';
  if (name.startsWith(LONG)) {
    const found = longNames.get(name);
    if (!found) throw new UnresolvedAlias(E.ENOENT, 'lookup', path, 'alias not listed yet');
    return found.segment;
  }
  if (last && name.endsWith(SHADOWED)) return decodeSegment(name.slice(0, -SHADOWED.length), false, path);
  return name;
}

export function pathToKey(path: string): string {
  if (!path.includes(RESERVED)) return path.replace(/^\/+/, '');
  const parts = path.slice(1).split('/');
  return parts.map((p, i) => decodeSegment(p, i === parts.length - 1, path)).join('/');
}

export function dirPrefix(path: string): string {
  if (path === '/') return '';
  return `${pathToKey(path)}/`;
}

export function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/**
 * A path looked up or about to be created: length limits. `nameMax` is lower than NAME_MAX for a new name when the
 * storage cannot hold a longer one (the embedded server keeps each key as files with a suffix).
 */
export function checkPath(path: string, op: string, nameMax = NAME_MAX): void {
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (Buffer.byteLength(name) > nameMax) throw new FsError(E.ENAMETOOLONG, op, path, `name longer than ${nameMax} bytes`);
  if (Buffer.byteLength(pathToKey(path)) + 1 > KEY_MAX) throw new FsError(E.ENAMETOOLONG, op, path, `S3 key longer than ${KEY_MAX} bytes`);
}

/** A path about to be created: length limits and reserved names. */
export function checkNewName(path: string, op: string, nameMax = NAME_MAX): void {
  checkPath(path, op, nameMax);
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (isAlias(name)) throw new FsError(E.EINVAL, op, path, `names containing "${RESERVED}" are reserved for odd keys`);
  if (name === '.s3vault-versions') throw new FsError(E.EINVAL, op, path, '.s3vault-versions is the versions view of every directory');
}
