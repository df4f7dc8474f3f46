/**
 * ReadData and WriteData (CBCache): how the vault moves bytes to and from external storage. The owner supplies
 * them; each reports bytes moved and an RWRESULT (RANGE_BEYOND_EOF: nothing past the returned bytes — the
 * vault zeroes the tail). `transferHandlers(driver)` makes them from a StorageDriver, which is what s3vault does.
 */
import { readInto, type ByteSink, type ByteSource, type MultipartStorage, type ObjectMeta, type ReadResult, type StorageDriver, type WriteOptions, type WriteResult } from '../storage/driver.js';
import type { RwResult } from '../storage/rwresult.js';

export interface TransferHandlers {
  /** ReadData: bytes [position, position + bytesToRead) of the object as it was at `etag`. */
  readData(key: string, position: number, bytesToRead: number, etag?: string): Promise<ReadResult>;
  /** Optional: ReadData streamed — the bytes handed to `sink` in order as they arrive. */
  readDataInto?(key: string, position: number, bytesToRead: number, etag: string | undefined, sink: ByteSink): Promise<{ bytes: number; result: RwResult }>;
  /**
   * Optional: ReadData straight into a file — bytes [position, position + bytesToRead) of the object at `etag`
   * written into the open file `fd` from `fileOffset`. True when all of them are there; false: the file holds
   * nothing known there, read through readDataInto instead.
   */
  readDataToFile?(key: string, position: number, bytesToRead: number, etag: string, fd: number, fileOffset: number): Promise<boolean>;
  /** WriteData: the whole object, `size` bytes read from `source`, with its metadata. */
  writeData(key: string, size: number, source: ByteSource, options: { meta: ObjectMeta; contentType?: string; stillValid?: () => boolean; resume?: WriteOptions['resume'] }): Promise<WriteResult>;
  /** Optional: multipart uploads sent part by part (stream uploads); absent where the storage has none. */
  multipart?: MultipartStorage;
  /** Replace only the object's metadata, its data staying as it is (copy onto itself). */
  replaceMeta(key: string, options: { meta: ObjectMeta; contentType?: string }): Promise<WriteResult>;
  /** The object's current ETag and size (HEAD), or null: the conflict check before replacing it. */
  statData(key: string): Promise<{ etag: string; size: number; lastModified: Date } | null>;
}

export function transferHandlers(driver: StorageDriver): TransferHandlers {
  return {
    readData: (key, position, bytesToRead, etag) => driver.read(key, position, bytesToRead, etag),
    readDataInto: (key, position, bytesToRead, etag, sink) => readInto(driver, key, position, bytesToRead, etag, sink),
    readDataToFile: driver.readToFile && ((key, position, bytesToRead, etag, fd, fileOffset) => driver.readToFile!(key, position, bytesToRead, etag, fd, fileOffset)),
    writeData: (key, size, source, options) => driver.write(key, size, source, options),
    multipart: driver.multipart,
    replaceMeta: async (key, options) => ({ ...(await driver.copy(key, key, options.meta, options.contentType)), result: 0 }),
    statData: async (key) => {
      const o = await driver.head(key);
      return o && { etag: o.etag, size: o.size, lastModified: o.lastModified };
    },
  };
}
