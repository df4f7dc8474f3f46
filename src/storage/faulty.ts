/**
 * Fault injection for tests (mountpoint-s3's failure_client idea): a driver wrapper that fails chosen calls
 * with a chosen RWRESULT, delays them, or behaves as if the storage were unreachable.
 */
import type { ByteSource, Listing, ListOptions, ObjectInfo, ObjectMeta, ReadResult, StorageDriver, WriteOptions, WriteResult } from './driver.js';
import { RWRESULT, StorageError, type RwResult } from './rwresult.js';

type Op = 'probe' | 'head' | 'read' | 'write' | 'list' | 'copy' | 'delete';

export class FaultyStorage implements StorageDriver {
  private readonly failures: { op: Op; result: RwResult; left: number }[] = [];
  private readonly delays = new Map<Op, number>();
  private lostAnswers = 0;
  private cutShort = 0;
  private unreachable = false;
  private readonly keyFailures = new Map<string, { result: RwResult; httpStatus?: number }>();

  constructor(readonly inner: StorageDriver) {}

  get description(): string {
    return `faulty ${this.inner.description}`;
  }

  /** The next `count` calls of `op` fail with `result`. */
  failNext(op: Op, result: RwResult, count = 1): void {
    this.failures.push({ op, result, left: count });
  }

  /** Every write of `key` fails with `result` as a server's HTTP `httpStatus` answer, until called without them. */
  failWritesOf(key: string, result?: RwResult, httpStatus?: number): void {
    if (result === undefined) this.keyFailures.delete(key);
    else this.keyFailures.set(key, { result, httpStatus });
  }

  /** The next `count` writes reach the storage, but their answer is lost (the caller sees a transient failure). */
  loseAnswerNext(count = 1): void {
    this.lostAnswers += count;
  }

  /** The next `count` writes are cut off half-way and the storage keeps what it got (an empty object). */
  cutShortNext(count = 1): void {
    this.cutShort += count;
  }

  /** Injected failures not yet used. */
  pendingFailures(): number {
    return this.failures.reduce((n, f) => n + f.left, 0);
  }

  delay(op: Op, ms: number): void {
    this.delays.set(op, ms);
  }

  /** Every call fails as a refused connection would, until `reachable(true)`. */
  reachable(yes: boolean): void {
    this.unreachable = !yes;
  }

  private async gate(op: Op, key?: string): Promise<void> {
    const ms = this.delays.get(op);
    if (ms) await new Promise((r) => setTimeout(r, ms));
    if (this.unreachable) throw new StorageError(RWRESULT.FAILURE, op, key, 'cannot reach the storage: connection refused');
    const k = op === 'write' && key !== undefined ? this.keyFailures.get(key) : undefined;
    if (k) throw new StorageError(k.result, op, key, `injected failure (HTTP ${k.httpStatus})`, { httpStatus: k.httpStatus });
    const f = this.failures.find((x) => x.op === op && x.left > 0);
    if (f) {
      f.left--;
      throw new StorageError(f.result, op, key, `injected failure`);
    }
  }

  async probe(): Promise<void> {
    await this.gate('probe');
    return this.inner.probe();
  }
  async head(key: string): Promise<ObjectInfo | null> {
    await this.gate('head', key);
    return this.inner.head(key);
  }
  async read(key: string, offset: number, length: number, etag?: string): Promise<ReadResult> {
    await this.gate('read', key);
    return this.inner.read(key, offset, length, etag);
  }
  async write(key: string, size: number, source: ByteSource, options?: WriteOptions): Promise<WriteResult> {
    await this.gate('write', key);
    if (this.cutShort > 0) {
      this.cutShort--;
      await this.inner.write(key, 0, async () => Buffer.alloc(0));
      throw new StorageError(RWRESULT.FAILURE, 'write', key, 'connection reset half-way');
    }
    const r = await this.inner.write(key, size, source, options);
    if (this.lostAnswers > 0) {
      this.lostAnswers--;
      throw new StorageError(RWRESULT.FAILURE, 'write', key, 'connection reset (the answer was lost)');
    }
    return r;
  }
  async list(prefix: string, options?: ListOptions): Promise<Listing> {
    await this.gate('list', prefix);
    return this.inner.list(prefix, options);
  }
  async copy(fromKey: string, toKey: string, meta?: ObjectMeta, contentType?: string): Promise<{ etag: string }> {
    await this.gate('copy', fromKey);
    return this.inner.copy(fromKey, toKey, meta, contentType);
  }
  async delete(key: string): Promise<void> {
    await this.gate('delete', key);
    return this.inner.delete(key);
  }
  async deleteMany(keys: string[]): Promise<void> {
    await this.gate('delete', keys[0]);
    return this.inner.deleteMany(keys);
  }
  async close(): Promise<void> {
    return this.inner.close();
  }
}
