/**
 * `--read-only`: a driver that refuses every request that would change the bucket, before it is sent. The
 * filesystem already answers EROFS; this is the guarantee underneath (uploads of changes left in the vault by an
 * earlier read-write mount included), so a read-only mount can never write, copy or delete.
 */
import { readInto, type ByteSink, type ByteSource, type ObjectMeta, type StorageDriver, type WriteResult } from './driver.js';
import { RWRESULT, StorageError } from './rwresult.js';

export class ReadOnlyStorage implements StorageDriver {
  constructor(private readonly inner: StorageDriver) {}

  get description(): string {
    return `${this.inner.description} (read-only)`;
  }
  get versions() {
    return this.inner.versions && { ...this.inner.versions, copyVersion: (_f: string, _v: string, toKey: string) => this.refuse('restore', toKey) };
  }
  private refuse(op: string, key: string): never {
    throw new StorageError(RWRESULT.FILE_FAILURE, op, key, 'the mount is read-only');
  }
  probe(): Promise<void> {
    return this.inner.probe();
  }
  head(key: string) {
    return this.inner.head(key);
  }
  read(key: string, offset: number, length: number, etag?: string) {
    return this.inner.read(key, offset, length, etag);
  }
  readInto(key: string, offset: number, length: number, etag: string | undefined, sink: ByteSink) {
    return readInto(this.inner, key, offset, length, etag, sink);
  }
  readToFile(key: string, offset: number, length: number, etag: string, fd: number, fileOffset: number): Promise<boolean> {
    return this.inner.readToFile ? this.inner.readToFile(key, offset, length, etag, fd, fileOffset) : Promise.resolve(false);
  }
  list(prefix: string, options?: Parameters<StorageDriver['list']>[1]) {
    return this.inner.list(prefix, options);
  }
  write(key: string, _size: number, _source: ByteSource): Promise<WriteResult> {
    return this.refuse('write', key);
  }
  copy(fromKey: string, toKey: string, _meta?: ObjectMeta): Promise<{ etag: string }> {
    return this.refuse('copy', toKey || fromKey);
  }
  delete(key: string): Promise<void> {
    return this.refuse('delete', key);
  }
  deleteMany(keys: string[]): Promise<void> {
    return this.refuse('delete', keys[0] ?? '');
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
