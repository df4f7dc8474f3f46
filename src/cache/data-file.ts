/**
 * A cached file's data file in the vault: the subset of fs/promises' FileHandle that CachedFile uses. Opening a
 * local file takes microseconds, so it runs synchronously — with FileHandle it was a thread-pool round trip on
 * every create and open (`cp -r` of small files paid it per file). Everything that can take long still runs on the
 * thread pool: reads, writes, fdatasync, truncate (freeing a large file's extents) and close (ext4 starts writing
 * back a file rewritten after a truncate when it is closed).
 */
import { close, fdatasync, ftruncate, openSync, read, write } from 'node:fs';
import { promisify } from 'node:util';

const readAsync = promisify(read);
const writeAsync = promisify(write);
const fdatasyncAsync = promisify(fdatasync);
const ftruncateAsync = promisify(ftruncate);
const closeAsync = promisify(close);

export class DataFile {
  private constructor(readonly fd: number) {}

  static open(path: string, flags: number, mode: number): DataFile {
    return new DataFile(openSync(path, flags, mode));
  }

  async read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return { bytesRead: (await readAsync(this.fd, buffer, offset, length, position)).bytesRead };
  }

  async write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    return { bytesWritten: (await writeAsync(this.fd, buffer, offset, length, position)).bytesWritten };
  }

  truncate(length: number): Promise<void> {
    return ftruncateAsync(this.fd, length);
  }

  datasync(): Promise<void> {
    return fdatasyncAsync(this.fd);
  }

  close(): Promise<void> {
    return closeAsync(this.fd);
  }
}
