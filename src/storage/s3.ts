/**
 * The S3 driver (AWS SDK v3). Keys given to it are relative to the mount's prefix. Large objects go up as
 * parallel multipart uploads whose parts are read from the ByteSource on demand into reused part buffers, so
 * memory stays bounded by partSize × 2 × uploadConcurrency whatever the file size and number of uploads.
 */
import http from 'node:http';
import type { Readable } from 'node:stream';
import https from 'node:https';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import type { ByteSink, ByteSource, MultipartStorage, Listing, ListOptions, ObjectInfo, ObjectMeta, ObjectVersion, ReadResult, StorageDriver, VersionedStorage, VersioningState, VersionListing, WriteOptions, WriteResult } from './driver.js';
import { RWRESULT, StorageError, type RwResult } from './rwresult.js';
import { toStorageError } from './s3-errors.js';
import { PartBuffers } from './part-buffers.js';
import { DirectRequests } from './direct.js';
import type { S3Config } from './config.js';

const stripQuotes = (etag: string | undefined): string => (etag ?? '').replace(/^"|"$/g, '');

/**
 * A response body into one Buffer, copied once into a buffer of the expected size (the SDK's
 * transformToByteArray re-concatenates as chunks arrive: a large share of a cold read's CPU in profiles).
 */
function collect(body: Readable, expected: number): Promise<Buffer> {
  // 'data' events, not for-await: the async iterator costs a promise round per 64 KiB chunk (profiles).
  return new Promise((resolve, reject) => {
    const out = Buffer.allocUnsafe(expected);
    const extra: Buffer[] = [];
    let n = 0;
    body.on('data', (chunk: Buffer) => {
      if (n + chunk.length <= expected) chunk.copy(out, n);
      else extra.push(chunk);
      n += chunk.length;
    });
    body.once('error', reject);
    body.once('end', () => {
      const inOut = n - extra.reduce((a, c) => a + c.length, 0);
      resolve(extra.length ? Buffer.concat([out.subarray(0, inOut), ...extra]) : out.subarray(0, n));
    });
  });
}

function stream(body: Readable, sink: ByteSink): Promise<void> {
  return new Promise((resolve, reject) => {
    body.on('data', (chunk: Buffer) => {
      try {
        sink(chunk);
      } catch (err) {
        body.destroy(err as Error);
      }
    });
    body.once('error', reject);
    body.once('end', () => resolve());
  });
}

export class S3Storage implements StorageDriver {
  readonly description: string;
  private readonly client: S3Client;
  private readonly prefix: string;
  private readonly endpointName: string;
  /** Every multipart upload's part buffers: twice one upload's parts in flight, whatever the number of uploads. */
  private readonly parts: PartBuffers;
  /** Multipart uploads part by part: stream uploads of files being written, and writeMultipart. */
  readonly multipart: MultipartStorage;
  /** HEADs, small PUTs and ranged GETs of current objects without the SDK's middleware; the SDK for the rest. */
  readonly direct: DirectRequests;

  constructor(private readonly config: S3Config) {
    this.parts = new PartBuffers(config.partSize, 2 * config.uploadConcurrency);
    this.multipart = this.makeMultipart();
    this.prefix = config.prefix ? config.prefix.replace(/\/*$/, '/') : '';
    this.endpointName = config.endpoint ?? `s3.${config.region}.amazonaws.com`;
    this.description = `s3://${config.bucket}/${this.prefix} (${this.endpointName})`;
    const agentOptions = { keepAlive: true, maxSockets: config.maxSockets };
    const agents = { http: new http.Agent(agentOptions), https: new https.Agent(agentOptions) };
    this.client = new S3Client({
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.forcePathStyle,
      credentials: config.credentials,
      profile: config.profile,
      maxAttempts: config.maxAttempts,
      // The middleware stack built once per command type, not per request: a fifth of the CPU of a HEAD (a cold
      // `ls -l` sends one per file). We pass no per-request options to send(), the condition for the cache.
      cacheMiddleware: true,
      // Some S3-compatible servers reject streamed aws-chunked bodies with checksum trailers (spec/rgw.md).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        connectionTimeout: config.connectTimeoutMs,
        // A request whose socket sees no traffic this long fails (and is retried). The handler's requestTimeout
        // only logs a warning: with it, a server that stopped reading an upload's body hung it for good.
        socketTimeout: config.requestTimeoutMs,
        httpAgent: agents.http,
        httpsAgent: agents.https,
      },
    });
    this.direct = new DirectRequests(this.client, config.bucket, agents, { connectMs: config.connectTimeoutMs, idleMs: config.requestTimeoutMs });
  }

  private full(key: string): string {
    return this.prefix + key;
  }

  private relative(key: string): string {
    return key.slice(this.prefix.length);
  }

  private fail(err: unknown, op: string, key?: string): StorageError {
    return toStorageError(err, op, key, this.endpointName);
  }

  async probe(): Promise<void> {
    try {
      await this.client.send(new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: this.prefix, MaxKeys: 1 }));
    } catch (err) {
      throw this.fail(err, 'probe', undefined);
    }
  }

  head(key: string): Promise<ObjectInfo | null> {
    return this.headObject(key);
  }

  private async headObject(key: string, versionId?: string): Promise<ObjectInfo | null> {
    if (versionId === undefined) {
      const quick = await this.direct.head(this.full(key));
      if (quick !== undefined) return quick && { key, ...quick };
    }
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: this.full(key), VersionId: versionId }));
      return { key, size: r.ContentLength ?? 0, etag: stripQuotes(r.ETag), lastModified: r.LastModified ?? new Date(0), meta: r.Metadata ?? {}, contentType: r.ContentType };
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'NotFound' || e.name === 'NoSuchKey' || e.name === 'NoSuchVersion' || e.$metadata?.httpStatusCode === 404) return null;
      throw this.fail(err, 'head', key);
    }
  }

  readonly versions: VersionedStorage = {
    versioning: () => this.versioning(),
    listVersions: (prefix, options) => this.listVersions(prefix, options),
    headVersion: (key, versionId) => this.headObject(key, versionId),
    readVersion: (key, versionId, offset, length) => this.ranged(key, offset, length, undefined, versionId),
    copyVersion: (fromKey, versionId, toKey) => this.copyVersion(fromKey, versionId, toKey),
  };

  private async versioning(): Promise<VersioningState> {
    try {
      const r = await this.client.send(new GetBucketVersioningCommand({ Bucket: this.config.bucket }));
      return r.Status === 'Enabled' ? 'Enabled' : r.Status === 'Suspended' ? 'Suspended' : 'Off';
    } catch (err) {
      throw this.fail(err, 'versioning', undefined);
    }
  }

  private async listVersions(prefix: string, options: { delimiter?: string; onlyKey?: string } = {}): Promise<VersionListing> {
    const out: VersionListing = { versions: [], prefixes: [] };
    const only = options.onlyKey === undefined ? undefined : this.full(options.onlyKey);
    let keyMarker: string | undefined;
    let versionMarker: string | undefined;
    try {
      for (;;) {
        const r = await this.client.send(
          new ListObjectVersionsCommand({ Bucket: this.config.bucket, Prefix: this.full(prefix), Delimiter: options.delimiter, KeyMarker: keyMarker, VersionIdMarker: versionMarker }),
        );
        const page: ObjectVersion[] = [];
        for (const v of r.Versions ?? []) {
          page.push({ key: this.relative(v.Key!), versionId: v.VersionId ?? 'null', lastModified: v.LastModified ?? new Date(0), size: v.Size ?? 0, etag: stripQuotes(v.ETag), isLatest: v.IsLatest === true, deleteMarker: false });
        }
        for (const d of r.DeleteMarkers ?? []) {
          page.push({ key: this.relative(d.Key!), versionId: d.VersionId ?? 'null', lastModified: d.LastModified ?? new Date(0), size: 0, etag: '', isLatest: d.IsLatest === true, deleteMarker: true });
        }
        // Versions and delete markers come in two lists: merge them back into key order, newest first.
        page.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : b.lastModified.getTime() - a.lastModified.getTime()));
        out.versions.push(...(only === undefined ? page : page.filter((v) => this.full(v.key) === only)));
        for (const p of r.CommonPrefixes ?? []) out.prefixes.push(this.relative(p.Prefix!));
        const passed = only !== undefined && page.some((v) => this.full(v.key) > only);
        if (!r.IsTruncated || passed) break;
        keyMarker = r.NextKeyMarker;
        versionMarker = r.NextVersionIdMarker;
      }
      return out;
    } catch (err) {
      throw this.fail(err, 'list versions', prefix);
    }
  }

  private async copyVersion(fromKey: string, versionId: string, toKey: string): Promise<{ etag: string; versionId?: string }> {
    try {
      const source = `${`${this.config.bucket}/${this.full(fromKey)}`.split('/').map(encodeURIComponent).join('/')}?versionId=${encodeURIComponent(versionId)}`;
      const r = await this.client.send(new CopyObjectCommand({ Bucket: this.config.bucket, Key: this.full(toKey), CopySource: source, MetadataDirective: 'COPY' }));
      return { etag: stripQuotes(r.CopyObjectResult?.ETag), versionId: r.VersionId };
    } catch (err) {
      throw this.fail(err, 'restore', toKey);
    }
  }

  read(key: string, offset: number, length: number, etag?: string): Promise<ReadResult> {
    return this.ranged(key, offset, length, etag);
  }

  /** The ranged read, streamed: each chunk goes to `sink` as it arrives (a vault fetch writes it straight to disk). */
  async readInto(key: string, offset: number, length: number, etag: string | undefined, sink: ByteSink): Promise<{ bytes: number; result: RwResult }> {
    let bytes = 0;
    const r = await this.ranged(key, offset, length, etag, undefined, (chunk) => {
      bytes += chunk.length;
      sink(chunk);
    });
    return { bytes, result: r.result === RWRESULT.SUCCESS && bytes < length ? RWRESULT.PARTIAL : r.result };
  }

  /** The ranged read by libcurl straight into the vault's data file (direct.ts); false: read it through the SDK. */
  readToFile(key: string, offset: number, length: number, etag: string, fd: number, fileOffset: number): Promise<boolean> {
    return this.direct.getToFile(this.full(key), offset, length, etag, fd, fileOffset);
  }

  /** A ranged GET of the current object (checked against `etag`) or of one version. */
  private async ranged(key: string, offset: number, length: number, etag?: string, versionId?: string, sink?: ByteSink): Promise<ReadResult> {
    if (length <= 0) return { data: Buffer.alloc(0), result: RWRESULT.SUCCESS };
    try {
      const r = await this.client.send(
        new GetObjectCommand({ Bucket: this.config.bucket, Key: this.full(key), VersionId: versionId, Range: `bytes=${offset}-${offset + length - 1}`, IfMatch: etag ? `"${etag}"` : undefined }),
      );
      // Servers that ignore If-Match still return the ETag of what they sent: never mix two versions of a file.
      if (etag !== undefined && r.ETag !== undefined && stripQuotes(r.ETag) !== etag) {
        r.Body?.transformToByteArray().catch(() => undefined);
        throw new StorageError(RWRESULT.FILE_MODIFIED_EXTERNALLY, 'read', key, `object changed (ETag ${stripQuotes(r.ETag)}, cached ${etag})`);
      }
      if (sink) {
        await stream(r.Body as Readable, sink);
        return { data: Buffer.alloc(0), result: RWRESULT.SUCCESS };
      }
      const data = await collect(r.Body as Readable, length);
      return { data, result: data.length < length ? RWRESULT.PARTIAL : RWRESULT.SUCCESS };
    } catch (err) {
      const se = this.fail(err, 'read', key);
      if (se.result === RWRESULT.RANGE_BEYOND_EOF) return { data: Buffer.alloc(0), result: RWRESULT.RANGE_BEYOND_EOF };
      throw se;
    }
  }

  private makeMultipart(): MultipartStorage {
    return {
      partSize: this.config.partSize,
      start: async (key, options) => {
        try {
          const r = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.config.bucket, Key: this.full(key), Metadata: options.meta, ContentType: options.contentType }));
          return r.UploadId!;
        } catch (err) {
          throw this.fail(err, 'write', key);
        }
      },
      putPart: async (key, uploadId, n, body) => {
        try {
          const r = await this.client.send(new UploadPartCommand({ Bucket: this.config.bucket, Key: this.full(key), UploadId: uploadId, PartNumber: n, Body: body, ContentLength: body.length }));
          return r.ETag!;
        } catch (err) {
          throw this.fail(err, 'write', key);
        }
      },
      abort: async (key, uploadId) => {
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.config.bucket, Key: this.full(key), UploadId: uploadId }));
        } catch (err) {
          throw this.fail(err, 'write', key);
        }
      },
    };
  }

  async write(key: string, size: number, source: ByteSource, options: WriteOptions = {}): Promise<WriteResult> {
    if (size > this.config.multipartThreshold || options.resume) return this.writeMultipart(key, size, source, options);
    try {
      const body = size === 0 ? Buffer.alloc(0) : await source(0, size);
      if (body.length !== size || options.stillValid?.() === false) throw new StorageError(RWRESULT.FILE_MODIFIED_LOCALLY, 'write', key, 'the file changed while it was read for upload');
      const direct = await this.direct.put(this.full(key), body, options.meta, options.contentType);
      if (direct) return { ...direct, result: RWRESULT.SUCCESS };
      const r = await this.client.send(
        new PutObjectCommand({ Bucket: this.config.bucket, Key: this.full(key), Body: body, ContentLength: size, Metadata: options.meta, ContentType: options.contentType }),
      );
      return { etag: stripQuotes(r.ETag), versionId: r.VersionId, result: RWRESULT.SUCCESS };
    } catch (err) {
      throw this.fail(err, 'write', key);
    }
  }

  private async writeMultipart(key: string, size: number, source: ByteSource, options: WriteOptions): Promise<WriteResult> {
    const Bucket = this.config.bucket;
    const Key = this.full(key);
    let uploadId: string | undefined = options.resume?.uploadId;
    try {
      uploadId ??= await this.multipart.start(key, { meta: options.meta, contentType: options.contentType });
      const partSize = this.config.partSize;
      // At least one part: an empty object completes with one empty part.
      const count = Math.max(1, Math.ceil(size / partSize));
      const etags: string[] = new Array(count);
      const queue = new PQueue({ concurrency: this.config.uploadConcurrency });
      // Each part's promise is handled here: the first failure stops the rest. (Left unhandled, a failed part
      // was an unhandled rejection, which ended the process.)
      let firstError: unknown;
      const stop = (e: unknown) => {
        firstError ??= e;
        queue.clear();
      };
      for (let i = 0; i < count; i++) {
        const offset = i * partSize;
        const length = Math.min(partSize, size - offset);
        const sent = options.resume?.parts.get(i + 1);
        if (sent !== undefined && length === partSize) {
          etags[i] = sent;
          continue;
        }
        queue.add(async () => {
          // The buffer goes back only once the request is over: the SDK retries a part from the same body.
          const buf = await this.parts.acquire();
          try {
            const body = await source(offset, length, buf);
            if (body.length !== length) throw new StorageError(RWRESULT.FILE_MODIFIED_LOCALLY, 'write', key, 'file changed while uploading');
            etags[i] = await this.multipart.putPart(key, uploadId!, i + 1, body);
          } finally {
            this.parts.release(buf);
          }
        }).catch(stop);
      }
      await queue.onIdle();
      if (firstError) throw firstError;
      if (options.stillValid?.() === false) throw new StorageError(RWRESULT.FILE_MODIFIED_LOCALLY, 'write', key, 'the file changed while it was uploaded');
      const done = await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }),
      );
      let etag = stripQuotes(done.ETag);
      // Some servers answer Complete with an empty ETag (spec/rgw.md): ask for it.
      if (!etag) etag = (await this.head(key))?.etag ?? '';
      return { etag, versionId: done.VersionId, result: RWRESULT.SUCCESS };
    } catch (err) {
      if (uploadId) await this.multipart.abort(key, uploadId).catch(() => undefined);
      throw this.fail(err, 'write', key);
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<Listing> {
    const listing: Listing = { objects: [], prefixes: [] };
    let token: string | undefined;
    try {
      do {
        const want = options.maxKeys === undefined ? 1000 : Math.min(1000, options.maxKeys - listing.objects.length - listing.prefixes.length);
        const r = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: this.full(prefix), Delimiter: options.delimiter, MaxKeys: want, ContinuationToken: token }),
        );
        const page: Listing = { objects: [], prefixes: [] };
        for (const o of r.Contents ?? []) {
          page.objects.push({ key: o.Key!.slice(this.prefix.length), size: o.Size ?? 0, etag: stripQuotes(o.ETag), lastModified: o.LastModified ?? new Date(0) });
        }
        for (const p of r.CommonPrefixes ?? []) page.prefixes.push(p.Prefix!.slice(this.prefix.length));
        for (const o of page.objects) listing.objects.push(o);
        for (const p of page.prefixes) listing.prefixes.push(p);
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
        const go = options.onPage?.(page);
        // A pause matters only before a next page: the last one's answer is not waited for.
        if (token && (await go) === false) {
          listing.stopped = true;
          break;
        }
        if (!token) void Promise.resolve(go).catch(() => undefined);
        if (options.maxKeys !== undefined && listing.objects.length + listing.prefixes.length >= options.maxKeys) break;
      } while (token);
      return listing;
    } catch (err) {
      throw this.fail(err, 'list', prefix);
    }
  }

  async copy(fromKey: string, toKey: string, meta?: ObjectMeta, contentType?: string): Promise<{ etag: string }> {
    try {
      const source = `${this.config.bucket}/${this.full(fromKey)}`.split('/').map(encodeURIComponent).join('/');
      const r = await this.client.send(
        new CopyObjectCommand({
          Bucket: this.config.bucket,
          Key: this.full(toKey),
          CopySource: source,
          MetadataDirective: meta ? 'REPLACE' : 'COPY',
          Metadata: meta,
          ContentType: meta ? contentType : undefined,
        }),
      );
      return { etag: stripQuotes(r.CopyObjectResult?.ETag) };
    } catch (err) {
      throw this.fail(err, 'copy', fromKey);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: this.full(key) }));
    } catch (err) {
      throw this.fail(err, 'delete', key);
    }
  }

  async deleteMany(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      try {
        const r = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.config.bucket, Delete: { Objects: batch.map((k) => ({ Key: this.full(k) })), Quiet: true } }),
        );
        const failed = r.Errors?.[0];
        if (failed) throw Object.assign(new Error(failed.Message ?? 'delete failed'), { name: failed.Code ?? 'DeleteFailed' });
      } catch (err) {
        throw this.fail(err, 'delete', batch[0]);
      }
    }
  }

  async close(): Promise<void> {
    this.direct.close();
    this.client.destroy();
  }
}
