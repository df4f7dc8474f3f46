/**
 * Paths ↔ S3 keys. A mount path "/a/b" is the key "a/b" (the driver adds the mount's prefix); the directory
 * "/a" lists the key prefix "a/"; the root lists "". Limits: a name over 255 bytes or a key over 1024 bytes
 * is ENAMETOOLONG.
 */
import { E, FsError } from '../errors.js';

export const NAME_MAX = 255;
export const KEY_MAX = 1024;

export function pathToKey(path: string): string {
  return path.replace(/^\/+/, '');
}

export function dirPrefix(path: string): string {
  const key = pathToKey(path);
  return key === '' ? '' : `${key}/`;
}

export function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

export function checkPath(path: string, op: string): void {
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (Buffer.byteLength(name) > NAME_MAX) throw new FsError(E.ENAMETOOLONG, op, path, `name longer than ${NAME_MAX} bytes`);
  if (Buffer.byteLength(pathToKey(path)) + 1 > KEY_MAX) throw new FsError(E.ENAMETOOLONG, op, path, `S3 key longer than ${KEY_MAX} bytes`);
}
