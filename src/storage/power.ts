/**
 * Power (the installable-driver lifecycle's power message, seed 004): a wrapper that tells its owner when the
 * storage goes offline and comes back. A transient failure (unreachable, timeout, 5xx, throttling) or a
 * bucket-wide one (PERMANENT_FAILURE) switches it to offline; while offline every call fails at once with the
 * same RWRESULT, without touching the network, and a probe runs with a doubling interval; the first probe that
 * succeeds switches it back online. Listeners pause and resume their transfers on these notifications.
 */
import { readInto, type ByteSink, type ByteSource, type Listing, type ListOptions, type MultipartStorage, type ObjectInfo, type ObjectMeta, type ReadResult, type StorageDriver, type WriteOptions, type WriteResult } from './driver.js';
import { RWRESULT, StorageError, type RwResult } from './rwresult.js';

export type PowerState = 'online' | 'offline';

export interface PowerOptions {
  /** First probe interval; doubles up to maxProbeMs. */
  probeMs?: number;
  maxProbeMs?: number;
}

export class PoweredStorage implements StorageDriver {
  private state: PowerState = 'online';
  private reason: StorageError | undefined;
  private timer: NodeJS.Timeout | undefined;
  private interval: number;
  private readonly listeners = new Set<(state: PowerState, reason?: StorageError) => void>();

  constructor(
    readonly inner: StorageDriver,
    private readonly options: PowerOptions = {},
  ) {
    this.interval = options.probeMs ?? 1000;
  }

  get description(): string {
    return this.inner.description;
  }

  get versions() {
    return this.inner.versions;
  }

  private multipartOps: MultipartStorage | undefined;

  /** The inner storage's multipart uploads, each call offline-aware like the others. */
  get multipart(): MultipartStorage | undefined {
    const inner = this.inner.multipart;
    if (!inner) return undefined;
    return (this.multipartOps ??= {
      partSize: inner.partSize,
      start: (key, options) => this.call('write', key, () => inner.start(key, options)),
      putPart: (key, uploadId, n, body) => this.call('write', key, () => inner.putPart(key, uploadId, n, body)),
      abort: (key, uploadId) => this.call('write', key, () => inner.abort(key, uploadId)),
    });
  }

  get power(): PowerState {
    return this.state;
  }

  /** Why it is offline (the failure that switched it), if it is. */
  get offlineReason(): StorageError | undefined {
    return this.reason;
  }

  onPower(listener: (state: PowerState, reason?: StorageError) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Switch offline now (mount while unreachable) and start probing. */
  goOffline(reason: StorageError): void {
    if (this.state === 'offline') return;
    this.state = 'offline';
    this.reason = reason;
    this.interval = this.options.probeMs ?? 1000;
    for (const l of this.listeners) l('offline', reason);
    this.scheduleProbe();
  }

  private goOnline(): void {
    if (this.state === 'online') return;
    this.state = 'online';
    this.reason = undefined;
    clearTimeout(this.timer);
    for (const l of this.listeners) l('online');
  }

  private scheduleProbe(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.inner.probe().then(
        () => this.goOnline(),
        () => {
          this.interval = Math.min(this.interval * 2, this.options.maxProbeMs ?? 15_000);
          this.scheduleProbe();
        },
      );
    }, this.interval);
    this.timer.unref();
  }

  /**
   * Whether a failure means the storage as a whole is out of reach. Not an HTTP 500/501 answer: the server is up
   * and failed that one request (a key it cannot store, a passing fault), so the caller retries that request
   * alone. Before, one such key sent the mount offline every time its upload was retried: reads of uncached
   * files and look-ups failed meanwhile, and the probe's success reset its backoff, so it flapped every second.
   */
  private static offlineFailure(err: StorageError): boolean {
    if (err.result === RWRESULT.PERMANENT_FAILURE) return true;
    return err.result === RWRESULT.FAILURE && err.httpStatus !== 500 && err.httpStatus !== 501;
  }

  private async call<T>(op: string, key: string | undefined, fn: () => Promise<T>): Promise<T> {
    if (this.state === 'offline') {
      const r = this.reason!;
      throw new StorageError(r.result, op, key, `storage offline (${r.detail})`);
    }
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StorageError && PoweredStorage.offlineFailure(err)) this.goOffline(err);
      throw err;
    }
  }

  /** The probe always goes to the network: it is how the owner learns the storage is back. */
  async probe(): Promise<void> {
    await this.inner.probe();
    this.goOnline();
  }

  head(key: string): Promise<ObjectInfo | null> {
    return this.call('head', key, () => this.inner.head(key));
  }
  read(key: string, offset: number, length: number, etag?: string): Promise<ReadResult> {
    return this.call('read', key, () => this.inner.read(key, offset, length, etag));
  }
  readInto(key: string, offset: number, length: number, etag: string | undefined, sink: ByteSink): Promise<{ bytes: number; result: RwResult }> {
    return this.call('read', key, () => readInto(this.inner, key, offset, length, etag, sink));
  }
  /** Offline, or on any failure, false: the caller's readInto then meets (and reports) the storage's state. */
  async readToFile(key: string, offset: number, length: number, etag: string, fd: number, fileOffset: number): Promise<boolean> {
    if (this.state === 'offline' || !this.inner.readToFile) return false;
    return this.inner.readToFile(key, offset, length, etag, fd, fileOffset);
  }
  write(key: string, size: number, source: ByteSource, options?: WriteOptions): Promise<WriteResult> {
    return this.call('write', key, () => this.inner.write(key, size, source, options));
  }
  list(prefix: string, options?: ListOptions): Promise<Listing> {
    return this.call('list', prefix, () => this.inner.list(prefix, options));
  }
  copy(fromKey: string, toKey: string, meta?: ObjectMeta, contentType?: string): Promise<{ etag: string }> {
    return this.call('copy', fromKey, () => this.inner.copy(fromKey, toKey, meta, contentType));
  }
  delete(key: string): Promise<void> {
    return this.call('delete', key, () => this.inner.delete(key));
  }
  deleteMany(keys: string[]): Promise<void> {
    return this.call('delete', keys[0], () => this.inner.deleteMany(keys));
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.listeners.clear();
    await this.inner.close();
  }
}
