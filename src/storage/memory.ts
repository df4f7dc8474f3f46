/** An in-memory bucket for unit tests: same contract as the S3 driver, no network. */
import { createHash } from 'node:crypto';
import type { ByteSource, Listing, ListOptions, MultipartStorage, ObjectInfo, ObjectMeta, ReadResult, StorageDriver, WriteOptions, WriteResult } from './driver.js';
import { RWRESULT, StorageError } from './rwresult.js';

/** Entries per page of a paged listing, as S3's ListObjectsV2 gives at most. */
const LIST_PAGE = 1000;

interface StoredObject {
  data: Buffer;
  etag: string;
  lastModified: Date;
  meta: ObjectMeta;
  contentType?: string;
}

export class MemoryStorage implements StorageDriver {
  readonly description = 'memory://';
  readonly objects = new Map<string, StoredObject>();
  /** Counts calls per operation, so tests can check that cached data needs no request. */
  readonly calls: Record<string, number> = {};

  private count(op: string): void {
    this.calls[op] = (this.calls[op] ?? 0) + 1;
  }

  /** Multipart uploads in progress (started, not completed or aborted), by upload id. */
  readonly uploads = new Map<string, { key: string; meta: ObjectMeta; contentType?: string; parts: Map<number, Buffer> }>();
  private uploadSeq = 0;

  /** Multipart uploads sent part by part; parts of `partSize` bytes (any size here: no network to please). */
  readonly multipart: MultipartStorage;

  constructor(readonly partSize = 5 * 1024 * 1024) {
    this.multipart = {
      partSize,
      start: async (key, options) => {
        this.count('startMultipart');
        const id = `upload-${++this.uploadSeq}`;
        this.uploads.set(id, { key, meta: options.meta ?? {}, contentType: options.contentType, parts: new Map() });
        return id;
      },
      putPart: async (key, uploadId, n, body) => {
        this.count('putPart');
        const u = this.uploads.get(uploadId);
        if (!u || u.key !== key) throw new StorageError(RWRESULT.FILE_FAILURE, 'write', key, 'no such upload');
        u.parts.set(n, Buffer.from(body));
        return createHash('md5').update(body).digest('hex');
      },
      abort: async (_key, uploadId) => {
        this.count('abortMultipart');
        this.uploads.delete(uploadId);
      },
    };
  }

  async probe(): Promise<void> {
    this.count('probe');
  }

  /** Test helper: put an object as another tool would. */
  putObject(key: string, data: Buffer | string, meta: ObjectMeta = {}): string {
    const buf = Buffer.from(data);
    const etag = createHash('md5').update(buf).digest('hex');
    this.objects.set(key, { data: buf, etag, lastModified: new Date(), meta });
    return etag;
  }

  private info(key: string, o: StoredObject, withMeta: boolean): ObjectInfo {
    return { key, size: o.data.length, etag: o.etag, lastModified: o.lastModified, ...(withMeta ? { meta: { ...o.meta }, contentType: o.contentType } : {}) };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    this.count('head');
    const o = this.objects.get(key);
    return o ? this.info(key, o, true) : null;
  }

  async read(key: string, offset: number, length: number, etag?: string): Promise<ReadResult> {
    this.count('read');
    const o = this.objects.get(key);
    if (!o) throw new StorageError(RWRESULT.FILE_FAILURE, 'read', key, 'no such object');
    if (etag !== undefined && etag !== o.etag) throw new StorageError(RWRESULT.FILE_MODIFIED_EXTERNALLY, 'read', key, 'object changed');
    if (offset >= o.data.length) return { data: Buffer.alloc(0), result: RWRESULT.RANGE_BEYOND_EOF };
    const data = Buffer.from(o.data.subarray(offset, offset + length));
    return { data, result: data.length < length ? RWRESULT.PARTIAL : RWRESULT.SUCCESS };
  }

  async write(key: string, size: number, source: ByteSource, options: WriteOptions = {}): Promise<WriteResult> {
    this.count('write');
    const current = this.objects.get(key);
    if (options.ifMatch !== undefined && current?.etag !== options.ifMatch) {
      throw new StorageError(RWRESULT.FILE_MODIFIED_EXTERNALLY, 'write', key, 'object changed');
    }
    if (options.resume) return this.complete(key, size, source, options, options.resume);
    const data = size === 0 ? Buffer.alloc(0) : await source(0, size);
    if (data.length !== size || options.stillValid?.() === false) throw new StorageError(RWRESULT.FILE_MODIFIED_LOCALLY, 'write', key, 'source changed');
    this.count('put');
    const etag = this.putObject(key, data, options.meta ?? {});
    this.objects.get(key)!.contentType = options.contentType;
    return { etag, result: RWRESULT.SUCCESS };
  }

  /** Complete a started multipart upload: the parts it names as sent, the rest read from the source now. */
  private async complete(key: string, size: number, source: ByteSource, options: WriteOptions, resume: NonNullable<WriteOptions['resume']>): Promise<WriteResult> {
    const u = this.uploads.get(resume.uploadId);
    this.uploads.delete(resume.uploadId); // over, whatever happens
    if (!u || u.key !== key) throw new StorageError(RWRESULT.FILE_FAILURE, 'write', key, 'no such upload');
    const pieces: Buffer[] = [];
    for (let offset = 0, n = 1; offset < size; offset += this.partSize, n++) {
      const length = Math.min(this.partSize, size - offset);
      const sent = resume.parts.has(n) && length === this.partSize ? u.parts.get(n) : undefined;
      if (sent) pieces.push(sent);
      else {
        this.count('putPart');
        pieces.push(Buffer.from(await source(offset, length)));
      }
    }
    const data = Buffer.concat(pieces);
    if (data.length !== size || options.stillValid?.() === false) throw new StorageError(RWRESULT.FILE_MODIFIED_LOCALLY, 'write', key, 'source changed');
    this.count('completeMultipart');
    const etag = this.putObject(key, data, u.meta);
    this.objects.get(key)!.contentType = u.contentType;
    return { etag, result: RWRESULT.SUCCESS };
  }

  /** With onPage, pages of LIST_PAGE entries (objects and prefixes in key order), each counted as `listPage`. */
  async list(prefix: string, options: ListOptions = {}): Promise<Listing> {
    this.count('list');
    const entries: (ObjectInfo | string)[] = [];
    const prefixes = new Set<string>();
    for (const key of [...this.objects.keys()].sort()) {
      if (!key.startsWith(prefix)) continue;
      const rest = key.slice(prefix.length);
      const cut = options.delimiter ? rest.indexOf(options.delimiter) : -1;
      const common = cut >= 0 ? prefix + rest.slice(0, cut + 1) : undefined;
      if (common === undefined) entries.push(this.info(key, this.objects.get(key)!, false));
      else if (!prefixes.has(common)) {
        prefixes.add(common);
        entries.push(common);
      }
      if (options.maxKeys !== undefined && entries.length >= options.maxKeys) break;
    }
    const listing = (from: (ObjectInfo | string)[]): Listing => ({
      objects: from.filter((e): e is ObjectInfo => typeof e !== 'string'),
      prefixes: from.filter((e): e is string => typeof e === 'string'),
    });
    if (!options.onPage) return listing(entries);
    const all: Listing = { objects: [], prefixes: [] };
    for (let i = 0; i < entries.length || i === 0; i += LIST_PAGE) {
      this.count('listPage');
      const page = listing(entries.slice(i, i + LIST_PAGE));
      all.objects.push(...page.objects);
      all.prefixes.push(...page.prefixes);
      const go = options.onPage(page);
      // As S3Storage: a pause matters only before a next page.
      if (i + LIST_PAGE >= entries.length) void Promise.resolve(go).catch(() => undefined);
      else if ((await go) === false) return { ...all, stopped: true };
    }
    return all;
  }

  async copy(fromKey: string, toKey: string, meta?: ObjectMeta, contentType?: string): Promise<{ etag: string }> {
    this.count('copy');
    const o = this.objects.get(fromKey);
    if (!o) throw new StorageError(RWRESULT.FILE_FAILURE, 'copy', fromKey, 'no such object');
    this.objects.set(toKey, { ...o, meta: meta ?? { ...o.meta }, contentType: contentType ?? o.contentType, lastModified: new Date() });
    return { etag: o.etag };
  }

  async delete(key: string): Promise<void> {
    this.count('delete');
    this.objects.delete(key);
  }

  /** One DeleteObjects per 1000 keys (counted as such, not as single deletes). */
  async deleteMany(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) this.count('deleteMany');
    for (const k of keys) this.objects.delete(k);
  }

  async close(): Promise<void> {}
}
