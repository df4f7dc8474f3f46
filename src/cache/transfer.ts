/**
 * ReadData and WriteData (CBCache): how the vault moves bytes to and from external storage. The owner supplies
 * them; each reports bytes moved and an RWRESULT (RANGE_BEYOND_EOF: nothing past the returned bytes — the
 * vault zeroes the tail). `transferHandlers(driver)` makes them from a StorageDriver, which is what s3vault does.
 */
import type { ByteSource, ObjectMeta, ReadResult, StorageDriver, WriteResult } from '../storage/driver.js';

export interface TransferHandlers {
  /** ReadData: bytes [position, position + bytesToRead) of the object as it was at `etag`. */
  readData(key: string, position: number, bytesToRead: number, etag?: string): Promise<ReadResult>;
  /** WriteData: the whole object, `size` bytes read from `source`, with its metadata. */
  writeData(key: string, size: number, source: ByteSource, options: { meta: ObjectMeta; contentType?: string; stillValid?: () => boolean }): Promise<WriteResult>;
  /** Replace only the object's metadata, its data staying as it is (copy onto itself). */
  replaceMeta(key: string, options: { meta: ObjectMeta; contentType?: string }): Promise<WriteResult>;
  /** The object's current ETag and size (HEAD), or null: the conflict check before replacing it. */
  statData(key: string): Promise<{ etag: string; size: number; lastModified: Date } | null>;
}

export function transferHandlers(driver: StorageDriver): TransferHandlers {
  return {
    readData: (key, position, bytesToRead, etag) => driver.read(key, position, bytesToRead, etag),
    writeData: (key, size, source, options) => driver.write(key, size, source, options),
    replaceMeta: async (key, options) => ({ ...(await driver.copy(key, key, options.meta, options.contentType)), result: 0 }),
    statData: async (key) => {
      const o = await driver.head(key);
      return o && { etag: o.etag, size: o.size, lastModified: o.lastModified };
    },
  };
}
