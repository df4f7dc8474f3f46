/**
 * A cached file's data file in the vault: the subset of fs/promises' FileHandle that CachedFile uses. Opening a
 * local file takes microseconds, so it runs synchronously — with FileHandle it was a thread-pool round trip on
 * every create and open (`cp -r` of small files paid it per file). Everything that can take long still runs on the
 * thread pool: reads, writes, fdatasync, truncate (freeing a large file's extents), and the close of a large file
 * truncated to nothing since it was opened: ext4, XFS and btrfs start writing such a file back when it is closed
 * (so that a rewrite-in-place survives a crash). Any other close only lets go of the descriptor, and runs here:
 * handing it to the thread pool cost more than the close (the upload of each small file closes its data file).
 */
import { close, closeSync, constants as fsc, fdatasync, ftruncate, openSync, read, write } from 'node:fs';
import { promisify } from 'node:util';

const readAsync = promisify(read);
const writeAsync = promisify(write);
const fdatasyncAsync = promisify(fdatasync);
const ftruncateAsync = promisify(ftruncate);
const closeAsync = promisify(close);

/** Up to this size a close runs here even after a truncate: the writeback it starts is a few pages. */
const SYNC_CLOSE_BYTES = 1024 * 1024;

export class DataFile {
  /** Truncated to nothing since it was opened: its close may start writeback. */
  private emptied = false;

  private constructor(readonly fd: number) {}

  /** A descriptor opened elsewhere (DataFilePool's spare: a new empty file). */
  static adopt(fd: number): DataFile {
    return new DataFile(fd);
  }

  static open(path: string, flags: number, mode: number): DataFile {
    // O_CREAT | O_TRUNC: a new file is not truncated by its creation, only one that was there already.
    if (flags & fsc.O_CREAT && flags & fsc.O_TRUNC) {
      try {
        return new DataFile(openSync(path, (flags & ~fsc.O_TRUNC) | fsc.O_EXCL, mode));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    const file = new DataFile(openSync(path, flags, mode));
    file.emptied = (flags & fsc.O_TRUNC) !== 0;
    return file;
  }

  async read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return { bytesRead: (await readAsync(this.fd, buffer, offset, length, position)).bytesRead };
  }

  async write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    return { bytesWritten: (await writeAsync(this.fd, buffer, offset, length, position)).bytesWritten };
  }

  truncate(length: number): Promise<void> {
    if (length === 0) this.emptied = true;
    return ftruncateAsync(this.fd, length);
  }

  datasync(): Promise<void> {
    return fdatasyncAsync(this.fd);
  }

  /** `size`: the file's size now (what a close after a truncate may have to write back). */
  close(size: number): Promise<void> {
    if (!this.emptied || size <= SYNC_CLOSE_BYTES) {
      try {
        closeSync(this.fd);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err as Error);
      }
    }
    return closeAsync(this.fd);
  }
}
