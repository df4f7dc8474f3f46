/**
 * The write-back queue: changed files wait FlushAfterCloseDelay after their last close, then upload with at
 * most `concurrency` transfers at once, within a memory budget (many small files at once, two large ones).
 * While changed files keep closing (a copy, an unpack, a clone), uploads wait until none has closed for the delay
 * — the mount gone quiet — but no file longer than `maxDelayMs` after its close, and not at all once the waiting
 * bytes pass `deferBytes`: uploads running beside such work took the CPU it needed (on 2 cores, `tar x` of 5 000
 * files took 20-24 s with them and 13-14 s without, and the files were all in S3 as soon either way).
 * Outcomes by RWRESULT (R46): FAILURE (timeouts, resets, 5xx,
 * throttling) retries after a delay doubled per attempt up to a cap, with jitter; FILE_MODIFIED_LOCALLY (the
 * file changed during its upload) goes again after the delay; FILE_FAILURE stops that file until its error is
 * reset; while the storage is offline (power) the queue is paused and resumes, in due order, when it returns.
 * Nothing here ever deletes or truncates data: a file leaves the queue only once uploaded or gone.
 */
import type { Logger } from '../log.js';
import { RWRESULT, StorageError, rwresultName } from '../storage/rwresult.js';
import type { UploadOutcome } from './cached-file.js';

/** What one upload may hold in memory: its size, up to a multipart window (4 parts of 8 MiB). */
const uploadCost = (size: number): number => Math.min(size, 32 * 1024 * 1024) + 64 * 1024;
/** Memory the uploads running at once may hold; the first one always runs. */
const UPLOAD_BYTES_BUDGET = 64 * 1024 * 1024;

export type QueueState = 'waiting' | 'uploading' | 'failed';

export interface QueueEntry {
  key: string;
  size: number;
  state: QueueState;
  /** When it is next due (ms since the epoch). */
  due: number;
  attempts: number;
  lastError?: string;
}

export interface WriteBackOptions {
  concurrency: number;
  delayMs: number;
  /** The longest a file waits after its close while others keep closing (at least delayMs). */
  maxDelayMs?: number;
  /** Waiting bytes past which uploads no longer wait for the mount to go quiet. */
  deferBytes?: () => number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Upload one file now; 'gone' when it no longer needs it (deleted, local, already clean). */
  upload: (key: string) => Promise<UploadOutcome | 'gone'>;
  log: Logger;
}

interface Item extends QueueEntry {
  waiters: { resolve: () => void; reject: (err: Error) => void }[];
}

export class WriteBack {
  private readonly items = new Map<string, Item>();
  private readonly roomWaiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** When the armed timer fires. */
  private timerDue = 0;
  /** Waiting items by due time as the last pump saw them (from `head` on); undefined once a due time changes. */
  private order: Item[] | undefined;
  private head = 0;
  private running = 0;
  private runningBytes = 0;
  /** Uploads under way, for `settled()`. */
  private readonly runs = new Set<Promise<void>>();
  private paused = false;
  private stopped = false;
  /** When a changed file last closed (a schedule with a delay): the mount is quiet delayMs after it. */
  private lastChange = 0;
  /**
   * Bytes of the items not failed (pendingBytes), kept as they change: every pump asks, and a sum over thousands of
   * waiting files each time made a large flush quadratic.
   */
  private bytes = 0;
  /** A pump is due at the end of this turn (flush of many files: one pump, not one per file). */
  private pumpSoon = false;
  /** Key prefixes whose uploads wait (a directory being moved: its keys are being copied to the new name). */
  private readonly held = new Map<string, number>();

  constructor(private readonly o: WriteBackOptions) {}

  /** (Re)arm a file's upload `delayMs` from now. */
  schedule(key: string, size: number, delayMs = this.o.delayMs): void {
    if (this.stopped) return;
    if (delayMs > 0) this.lastChange = Date.now();
    const item = this.items.get(key);
    if (item) {
      if (item.state !== 'failed') this.bytes += size - item.size;
      item.size = size;
      // While uploading, nothing to do: a change after the upload read the file makes it come back 'changed'.
      if (item.state === 'waiting') item.due = Date.now() + delayMs;
      this.order = undefined;
    } else {
      const added: Item = { key, size, state: 'waiting', due: Date.now() + delayMs, attempts: 0, waiters: [] };
      this.items.set(key, added);
      this.bytes += size;
      // Files closed one after another come due in that order: they join the end without a re-sort.
      const order = this.order;
      if (order && (order.length === this.head || order[order.length - 1].due <= added.due)) order.push(added);
      else this.order = undefined;
    }
    // Pumping for every one of the thousands of files `cp -r` schedules is wasted work. Not needed while the armed
    // timer fires before this file is due anyway, nor while every upload slot is busy (each upload's end pumps).
    const due = this.items.get(key)!.due;
    if (delayMs > 0 && ((this.timer !== undefined && this.timerDue <= due) || this.running >= this.o.concurrency)) return;
    this.pump();
  }

  /** The file was renamed: its pending upload follows it. */
  move(fromKey: string, toKey: string): void {
    const item = this.items.get(fromKey);
    if (!item || item.state === 'uploading') return;
    this.items.delete(fromKey);
    this.drop(toKey);
    item.key = toKey;
    this.items.set(toKey, item);
  }

  /** The file is gone (deleted, replaced): forget its pending upload. */
  drop(key: string): void {
    const item = this.items.get(key);
    if (!item || item.state === 'uploading') return;
    this.items.delete(key);
    if (item.state !== 'failed') this.bytes -= item.size;
    for (const w of item.waiters) w.resolve();
    this.notifyRoom();
  }

  /** Upload now and wait for it (fsync with --sync remote, `s3vault flush`). */
  flush(key: string, size: number): Promise<void> {
    if (!this.items.has(key)) this.schedule(key, size, 0);
    const item = this.items.get(key)!;
    if (item.state === 'waiting') item.due = Math.min(item.due, Date.now());
    this.order = undefined;
    if (item.state === 'failed') return Promise.reject(new Error(`${key}: uploads stopped after ${item.lastError}; run "s3vault reset-errors"`));
    const done = new Promise<void>((resolve, reject) => item.waiters.push({ resolve, reject }));
    // `s3vault flush` asks for thousands of files in one turn: each asking re-sorted the queue in its own pump.
    if (!this.pumpSoon) {
      this.pumpSoon = true;
      queueMicrotask(() => {
        this.pumpSoon = false;
        this.pump();
      });
    }
    return done;
  }

  /** Wait until a file has no upload in flight (before deleting or renaming it). */
  async settled(key: string): Promise<void> {
    await this.waitWhile(() => this.items.get(key)?.state === 'uploading');
  }

  isPending(key: string): boolean {
    return this.items.has(key);
  }

  pause(): void {
    this.paused = true;
  }

  /** Uploads of keys under `prefix` wait until the returned function is called (they keep their place). */
  hold(prefix: string): () => void {
    this.held.set(prefix, (this.held.get(prefix) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.held.get(prefix)! - 1;
      if (n > 0) this.held.set(prefix, n);
      else this.held.delete(prefix);
      this.order = undefined;
      this.pump();
    };
  }

  /** Wait until no upload of a key under `prefix` is in flight. */
  async settledUnder(prefix: string): Promise<void> {
    await this.waitWhile(() => [...this.items.values()].some((i) => i.state === 'uploading' && i.key.startsWith(prefix)));
  }

  /** Uploads end without telling anyone but their waiters: look again every 10 ms. */
  private async waitWhile(busy: () => boolean): Promise<void> {
    while (busy()) await new Promise((r) => setTimeout(r, 10));
  }

  private isHeld(key: string): boolean {
    for (const prefix of this.held.keys()) if (key.startsWith(prefix)) return true;
    return false;
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  /** ResetErrorState: failed files (FILE_FAILURE) go back in the queue, due now. */
  resetErrors(key?: string): number {
    let n = 0;
    for (const item of this.items.values()) {
      if (item.state !== 'failed' || (key !== undefined && item.key !== key)) continue;
      item.state = 'waiting';
      this.bytes += item.size;
      item.attempts = 0;
      item.due = Date.now();
      n++;
    }
    this.order = undefined;
    this.pump();
    return n;
  }

  entries(): QueueEntry[] {
    return [...this.items.values()].map(({ waiters: _, ...e }) => ({ ...e })).sort((a, b) => a.due - b.due);
  }

  /** Bytes of files waiting or uploading (back-pressure counts these). */
  get pendingBytes(): number {
    return this.bytes;
  }

  /** Resolve once pendingBytes is at most `budget` (or the queue stops). */
  async waitForRoom(budget: number): Promise<void> {
    while (!this.stopped && this.pendingBytes > budget) await new Promise<void>((r) => this.roomWaiters.push(r));
  }

  private notifyRoom(): void {
    for (const w of this.roomWaiters.splice(0)) w();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.notifyRoom();
  }

  /** Once stopped: resolves when the uploads under way have ended (none starts after `stop`). */
  async allSettled(): Promise<void> {
    while (this.runs.size) await Promise.allSettled([...this.runs]);
  }

  private pump(): void {
    if (this.stopped || this.paused) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = Date.now();
    // Sorted once per change of due times, not per pump: every finished upload pumps, and re-sorting a queue of
    // thousands each time made a large flush quadratic.
    if (!this.order) {
      this.order = [...this.items.values()].filter((i) => i.state === 'waiting').sort((a, b) => a.due - b.due);
      this.head = 0;
    }
    const order = this.order;
    const live = (i: Item): boolean => i.state === 'waiting' && this.items.get(i.key) === i;
    // Not quiet yet: a due file waits on, until its own deadline, unless someone waits for it (flush, fsync).
    const quietAt = this.lastChange + this.o.delayMs;
    const extra = Math.max(0, (this.o.maxDelayMs ?? this.o.delayMs) - this.o.delayMs);
    const deferring = now < quietAt && extra > 0 && this.pendingBytes <= (this.o.deferBytes?.() ?? Number.POSITIVE_INFINITY);
    const deferred = (i: Item): boolean => deferring && i.waiters.length === 0 && now < i.due + extra;
    while (this.head < order.length && !live(order[this.head])) this.head++;
    for (let n = this.head; n < order.length; n++) {
      const item = order[n];
      if (!live(item)) continue;
      if (this.running >= this.o.concurrency || item.due > now) break;
      if (deferred(item)) continue;
      if (this.held.size && this.isHeld(item.key)) continue;
      // Many small files go up together; large ones (each holds its multipart window of memory) fewer at once.
      if (this.running > 0 && this.runningBytes + uploadCost(item.size) > UPLOAD_BYTES_BUDGET) break;
      const run = this.run(item);
      this.runs.add(run);
      void run.finally(() => this.runs.delete(run));
    }
    while (this.head < order.length && !live(order[this.head])) this.head++;
    const next = order[this.head];
    if (next && this.running < this.o.concurrency) {
      this.timerDue = deferring ? Math.min(Math.max(next.due, quietAt), next.due + extra) : next.due;
      this.timer = setTimeout(() => this.pump(), Math.max(0, this.timerDue - Date.now()));
      this.timer.unref();
    }
  }

  private finish(item: Item): void {
    this.items.delete(item.key);
    this.bytes -= item.size;
    for (const w of item.waiters.splice(0)) w.resolve();
    this.notifyRoom();
  }

  private async run(item: Item): Promise<void> {
    item.state = 'uploading';
    this.running++;
    const cost = uploadCost(item.size);
    this.runningBytes += cost;
    try {
      const outcome = await this.o.upload(item.key);
      item.attempts = 0;
      if (outcome === 'changed') {
        item.state = 'waiting';
        item.due = Date.now() + this.o.delayMs;
        this.order = undefined;
      } else this.finish(item);
    } catch (err) {
      this.failed(item, err);
    } finally {
      this.running--;
      this.runningBytes -= cost;
      this.pump();
    }
  }

  private failed(item: Item, err: unknown): void {
    const result = err instanceof StorageError ? err.result : RWRESULT.FAILURE;
    item.lastError = `${rwresultName(result)}: ${(err as Error).message}`;
    if (result === RWRESULT.FILE_FAILURE) {
      item.state = 'failed';
      this.bytes -= item.size;
      this.o.log.error({ key: item.key, err: item.lastError }, 'upload failed for this file; it stays in the vault until "s3vault reset-errors"');
      for (const w of item.waiters.splice(0)) w.reject(new Error(`${item.key}: ${item.lastError}`));
      this.notifyRoom();
      return;
    }
    item.state = 'waiting';
    this.order = undefined;
    // The storage went offline under it: no backoff, it keeps its place and goes first when the queue resumes.
    if (this.paused) return;
    if (result === RWRESULT.FILE_MODIFIED_LOCALLY) {
      item.due = Date.now() + this.o.delayMs;
      return;
    }
    item.attempts++;
    const backoff = Math.min(this.o.retryMaxMs, this.o.retryBaseMs * 2 ** (item.attempts - 1));
    item.due = Date.now() + Math.round(backoff * (0.5 + Math.random()));
    this.o.log.warn({ key: item.key, attempt: item.attempts, retryInMs: item.due - Date.now(), err: item.lastError }, 'upload failed; will retry');
  }
}
