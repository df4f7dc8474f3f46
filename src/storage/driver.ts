/**
 * The external-storage driver interface. A driver knows buckets and keys, nothing of the vault or of FUSE.
 * Reads and writes report an RWRESULT; failures throw StorageError (see rwresult.ts).
 */
import type { RwResult } from './rwresult.js';

/** User metadata as stored with the object (`x-amz-meta-*` on S3), names lower-case without the prefix. */
export type ObjectMeta = Record<string, string>;

export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
  lastModified: Date;
  /** Present when the call returns it (HEAD, GET); listings do not carry user metadata. */
  meta?: ObjectMeta;
  contentType?: string;
}

export interface Listing {
  objects: ObjectInfo[];
  /** Common prefixes ("sub-directories"), each ending with the delimiter. */
  prefixes: string[];
  /** onPage stopped the listing: these are its pages so far, not the whole of it. */
  stopped?: true;
}

export interface ReadResult {
  data: Buffer;
  /** SUCCESS, PARTIAL (short read) or RANGE_BEYOND_EOF (nothing at or after the offset). */
  result: RwResult;
}

/**
 * Supplies the bytes of an upload, a range at a time, so a large file never sits in memory whole. Given `into`
 * (at least `length` bytes), it reads into that buffer and returns the filled part of it.
 */
export type ByteSource = (offset: number, length: number, into?: Buffer) => Promise<Buffer>;

export interface WriteOptions {
  meta?: ObjectMeta;
  contentType?: string;
  /** Replace only if the current object has this ETag (conditional write where the server supports it). */
  ifMatch?: string;
  /**
   * Asked after the body was read (single PUT) and before a multipart upload is completed: false means the
   * source changed meanwhile, and the write fails with FILE_MODIFIED_LOCALLY instead of publishing it.
   */
  stillValid?: () => boolean;
  /**
   * Complete this multipart upload (MultipartStorage.start) instead of starting one: the parts it names (1-based
   * number → ETag, each `partSize` bytes of the object) are already in storage; the others are read and sent.
   * Whatever happens, the upload is over when the write returns (completed, or aborted on failure).
   */
  resume?: { uploadId: string; parts: ReadonlyMap<number, string> };
}

/** Parts of a multipart upload sent before it is completed (a file still being written), where storage has them. */
export interface MultipartStorage {
  /** Every part but the last has this size. */
  readonly partSize: number;
  /** CreateMultipartUpload with the object's metadata: the upload id. */
  start(key: string, options: { meta?: ObjectMeta; contentType?: string }): Promise<string>;
  /** UploadPart `n` (1-based): its ETag. */
  putPart(key: string, uploadId: string, n: number, body: Buffer): Promise<string>;
  /** AbortMultipartUpload: its parts are dropped. */
  abort(key: string, uploadId: string): Promise<void>;
}

export interface WriteResult {
  etag: string;
  /** Set by servers with versioning enabled. */
  versionId?: string;
  result: RwResult;
}

export interface ListOptions {
  delimiter?: string;
  /** Stop after this many entries (objects + prefixes); default: all pages. */
  maxKeys?: number;
  /**
   * Each page as it arrives (drivers that list in one go may never call it). The next page is asked for once it
   * returns, or once its promise settles: a caller may pause the listing. `false` stops it there (the listing
   * returned is then `stopped`). After the last page the listing returns at once, whatever onPage returned.
   */
  onPage?: (page: Listing) => void | boolean | Promise<void | boolean>;
}

/** One stored version of an object (S3 versioning). */
export interface ObjectVersion {
  key: string;
  versionId: string;
  lastModified: Date;
  size: number;
  etag: string;
  isLatest: boolean;
  /** A delete marker: the key looked deleted from this time on. */
  deleteMarker: boolean;
}

export interface VersionListing {
  /** Per key in key order, newest first. */
  versions: ObjectVersion[];
  prefixes: string[];
}

export type VersioningState = 'Enabled' | 'Suspended' | 'Off';

/** What storage with object versions offers (S3 versioning); `StorageDriver.versions` when it has them. */
export interface VersionedStorage {
  versioning(): Promise<VersioningState>;
  /** ListObjectVersions: all pages, or until `maxKeys` keys/prefixes; `onlyKey` stops once keys pass it. */
  listVersions(prefix: string, options?: { delimiter?: string; onlyKey?: string }): Promise<VersionListing>;
  headVersion(key: string, versionId: string): Promise<ObjectInfo | null>;
  readVersion(key: string, versionId: string, offset: number, length: number): Promise<ReadResult>;
  /** Server-side copy of one version onto a key (restore): no data through the client. */
  copyVersion(fromKey: string, versionId: string, toKey: string): Promise<{ etag: string; versionId?: string }>;
}

export interface StorageDriver {
  /** Human-readable location, e.g. `s3://bucket/prefix at http://127.0.0.1:9000`. */
  readonly description: string;
  /** Check that the bucket is reachable with the given credentials. Throws StorageError otherwise. */
  probe(): Promise<void>;
  head(key: string): Promise<ObjectInfo | null>;
  /** Ranged read. With `etag`, a changed object fails with FILE_MODIFIED_EXTERNALLY instead of mixing versions. */
  read(key: string, offset: number, length: number, etag?: string): Promise<ReadResult>;
  /**
   * Optional: the same ranged read, its bytes handed to `sink` in order as they arrive — no buffer of the whole
   * range (readInto() falls back to read() for drivers without it).
   */
  readInto?(key: string, offset: number, length: number, etag: string | undefined, sink: ByteSink): Promise<{ bytes: number; result: RwResult }>;
  /**
   * Optional: the same ranged read of the object at `etag`, written by the driver into the open file `fd` from
   * `fileOffset`. True when every byte is there; false when it could not (the caller reads it another way).
   */
  readToFile?(key: string, offset: number, length: number, etag: string, fd: number, fileOffset: number): Promise<boolean>;
  write(key: string, size: number, source: ByteSource, options?: WriteOptions): Promise<WriteResult>;
  list(prefix: string, options?: ListOptions): Promise<Listing>;
  /** Server-side copy; `meta` replaces the metadata, otherwise it is kept. */
  copy(fromKey: string, toKey: string, meta?: ObjectMeta, contentType?: string): Promise<{ etag: string }>;
  delete(key: string): Promise<void>;
  deleteMany(keys: string[]): Promise<void>;
  close(): Promise<void>;
  /** Object versions, when the storage can keep them (S3); absent otherwise. */
  readonly versions?: VersionedStorage;
  /** Multipart uploads sent part by part, when the storage has them; absent otherwise. */
  readonly multipart?: MultipartStorage;
}

export type ByteSink = (chunk: Buffer) => void;

/** A streaming ranged read through any driver (those without readInto read the range whole, then hand it over). */
export async function readInto(driver: StorageDriver, key: string, offset: number, length: number, etag: string | undefined, sink: ByteSink): Promise<{ bytes: number; result: RwResult }> {
  if (driver.readInto) return driver.readInto(key, offset, length, etag, sink);
  const r = await driver.read(key, offset, length, etag);
  if (r.data.length) sink(r.data);
  return { bytes: r.data.length, result: r.result };
}
