/**
 * The one error type of the filesystem layer: an errno plus the operation and path it belongs to.
 * Lower layers' errors become FsErrors through toFsError (StorageError by RWRESULT, VaultError by code).
 */
import { constants } from 'node:os';
import { VaultError } from '../cache/errors.js';
import { RWRESULT, StorageError } from '../storage/rwresult.js';

export const E = constants.errno;

export class FsError extends Error {
  constructor(
    readonly errno: number,
    readonly op: string,
    readonly path: string,
    message?: string,
    options?: { cause?: unknown },
  ) {
    super(`${op} ${path}: ${message ?? errnoName(errno)}`, options);
    this.name = 'FsError';
  }
}

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(E)) if (value === errno) return name;
  return `errno ${errno}`;
}

export function toFsError(err: unknown, op: string, path: string): FsError {
  if (err instanceof FsError) return err;
  if (err instanceof StorageError) {
    // An object that changed under a read is stale data, not an I/O failure.
    const errno = err.result === RWRESULT.FILE_MODIFIED_EXTERNALLY ? E.ESTALE : err.result === RWRESULT.PERMANENT_FAILURE ? E.EACCES : E.EIO;
    return new FsError(errno, op, path, err.message, { cause: err });
  }
  if (err instanceof VaultError) {
    const errno = err.code === 'INVALID' ? E.EINVAL : err.code === 'NOT_FOUND' ? E.ENOENT : E.EIO;
    return new FsError(errno, op, path, err.message, { cause: err });
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC') return new FsError(E.ENOSPC, op, path, 'vault disk is full', { cause: err });
  return new FsError(E.EIO, op, path, (err as Error | undefined)?.message ?? String(err), { cause: err });
}
