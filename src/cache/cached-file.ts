/**
 * One cached file: its record, its block map and its sparse data file (`data/<id>`, bytes at the file's own
 * offsets). Blocks are absent, clean (equal to storage) or dirty (changed locally). Bytes at or past
 * `fetchLimit` are local (zeros unless written) and never fetched, which is how truncation and extension
 * stay correct without fetching anything. Reads of absent blocks fire ReadData (ranged storage reads);
 * adjacent absent blocks are fetched in one request, concurrent readers of one block share one fetch, and
 * sequential reads open a growing read-ahead window.
 */
import type { FileHandle } from 'node:fs/promises';
import type { ObjectMeta, StorageDriver } from '../storage/driver.js';
import { RWRESULT, StorageError } from '../storage/rwresult.js';
import type { Logger } from '../log.js';
import { Mutex } from './mutex.js';
import type { VaultStatements } from './statements.js';

export const BLOCK = { ABSENT: 0, CLEAN: 1, DIRTY: 2 } as const;

export interface FileAttrs {
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
}

export interface FileRecord extends FileAttrs {
  id: number;
  key: string;
  size: number;
  fetchLimit: number;
  remoteEtag: string | null;
  dirty: boolean;
  lastError: number;
}

/** What the vault shares with its open files. */
export interface FileContext {
  storage: StorageDriver;
  statements: VaultStatements;
  blockSize: number;
  /** Largest single ranged read, in blocks. */
  fetchBlocks: number;
  /** Largest read-ahead window, in blocks. */
  readAheadBlocks: number;
  objectMeta: (attrs: FileAttrs, key: string) => { meta: ObjectMeta; contentType?: string };
  log: Logger;
}

export class CachedFile {
  openCount = 0;
  /** Set when the file was deleted while open: it lives on for its handles and is never uploaded. */
  unlinked = false;
  private readonly lock = new Mutex();
  private readonly inflight = new Map<number, Promise<void>>();
  private readonly changed = new Set<number>();
  private lastReadEnd = -1;
  private window = 0;
  /** First block not yet requested by read-ahead. */
  private aheadNext = 0;

  constructor(
    private readonly ctx: FileContext,
    readonly rec: FileRecord,
    private states: Uint8Array,
    private readonly fd: FileHandle,
  ) {}

  get key(): string {
    return this.rec.key;
  }
  get size(): number {
    return this.rec.size;
  }
  get dirty(): boolean {
    return this.rec.dirty;
  }

  private blockCount(size = this.rec.size): number {
    return Math.ceil(size / this.ctx.blockSize);
  }

  /** A block must come from storage before use: absent, and partly before fetchLimit. */
  private needsFetch(b: number): boolean {
    return (this.states[b] ?? BLOCK.ABSENT) === BLOCK.ABSENT && b * this.ctx.blockSize < this.rec.fetchLimit;
  }

  private growStates(blocks: number): void {
    if (blocks <= this.states.length) return;
    const next = new Uint8Array(Math.max(blocks, this.states.length * 2));
    next.set(this.states);
    this.states = next;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset >= this.rec.size || length <= 0) return Buffer.alloc(0);
    const end = Math.min(this.rec.size, offset + length);
    await this.ensure(offset, end, true);
    return this.readLocal(offset, end - offset);
  }

  /** Bytes from the data file; past its end the file is sparse, so zeros. */
  private async readLocal(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fd.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    if (done < length) buf.fill(0, done);
    return buf;
  }

  /** Make [start, end) local: start fetches for missing blocks (plus read-ahead) and wait for the needed ones. */
  private async ensure(start: number, end: number, readAhead: boolean): Promise<void> {
    const bs = this.ctx.blockSize;
    const first = Math.floor(start / bs);
    const last = Math.floor((end - 1) / bs);
    this.startFetches(first, last);
    if (readAhead) this.readAhead(start, end, last);
    const waits: Promise<void>[] = [];
    for (let b = first; b <= last; b++) {
      const p = this.inflight.get(b);
      if (p) waits.push(p);
    }
    await Promise.all(waits);
  }

  /**
   * Sequential access grows a window (1, 2, 4 … blocks) and fetches it ahead in batches, re-armed when the
   * reader has consumed half of it; a jump resets it, so random reads fetch only what they touch.
   */
  private readAhead(start: number, end: number, last: number): void {
    const sequential = start === this.lastReadEnd;
    this.lastReadEnd = end;
    if (!sequential) {
      this.window = 0;
      this.aheadNext = 0;
      return;
    }
    this.window = Math.min(Math.max(1, this.window * 2), this.ctx.readAheadBlocks);
    if (this.window === 0 || this.aheadNext > last + Math.ceil(this.window / 2)) return;
    const from = Math.max(this.aheadNext, last + 1);
    const to = Math.min(last + this.window, this.blockCount(this.rec.fetchLimit) - 1);
    if (to >= from) this.startFetches(from, to);
    this.aheadNext = to + 1;
  }

  /** ensure() over a large range, a bounded span at a time so memory stays small whatever the file size. */
  private async ensureAll(start: number, end: number): Promise<void> {
    const span = this.ctx.blockSize * this.ctx.fetchBlocks * 4;
    for (let s = start; s < end; s += span) await this.ensure(s, Math.min(end, s + span), false);
  }

  private startFetches(first: number, last: number): void {
    let runStart = -1;
    const flush = (runEnd: number): void => {
      if (runStart < 0) return;
      const p = this.fetchRun(runStart, runEnd);
      // Read-ahead fetches may fail with nobody waiting: the waiters see the error, the process must not crash.
      p.catch(() => undefined);
      for (let b = runStart; b <= runEnd; b++) this.inflight.set(b, p);
      runStart = -1;
    };
    for (let b = first; b <= last; b++) {
      const wanted = this.needsFetch(b) && !this.inflight.has(b);
      if (wanted && runStart < 0) runStart = b;
      if (!wanted) flush(b - 1);
      else if (b - runStart + 1 >= this.ctx.fetchBlocks) flush(b);
    }
    flush(last);
  }

  /** ReadData: one ranged read for blocks [first, last], stored as clean blocks. */
  private async fetchRun(first: number, last: number): Promise<void> {
    const bs = this.ctx.blockSize;
    const offset = first * bs;
    try {
      const length = Math.min((last + 1) * bs, this.rec.fetchLimit) - offset;
      const r = await this.ctx.storage.read(this.rec.key, offset, length, this.rec.remoteEtag ?? undefined);
      // RANGE_BEYOND_EOF / PARTIAL: the object is shorter than expected; the tail stays zero (R47).
      if (r.result !== RWRESULT.SUCCESS) this.ctx.log.warn({ key: this.rec.key, offset, length, got: r.data.length }, 'storage returned less than requested; tail zeroed');
      const keep = Math.min(r.data.length, Math.max(0, this.rec.fetchLimit - offset));
      if (keep > 0) await this.fd.write(r.data, 0, keep, offset);
      const clean: number[] = [];
      for (let b = first; b <= last && b < this.blockCount(); b++) {
        if ((this.states[b] ?? BLOCK.ABSENT) === BLOCK.ABSENT) {
          this.growStates(b + 1);
          this.states[b] = BLOCK.CLEAN;
          clean.push(b);
        }
      }
      this.ctx.statements.putBlocks(this.rec.id, clean, BLOCK.CLEAN);
    } catch (err) {
      if (err instanceof StorageError) this.rec.lastError = err.result;
      throw err;
    } finally {
      for (let b = first; b <= last; b++) this.inflight.delete(b);
    }
  }

  private async waitInflight(first: number, last: number): Promise<void> {
    const waits = new Set<Promise<void>>();
    for (let b = first; b <= last; b++) {
      const p = this.inflight.get(b);
      if (p) waits.add(p);
    }
    if (waits.size) await Promise.allSettled(waits);
  }

  async write(offset: number, data: Buffer): Promise<number> {
    if (data.length === 0) return 0;
    return this.lock.run(async () => {
      const bs = this.ctx.blockSize;
      const end = offset + data.length;
      const first = Math.floor(offset / bs);
      const last = Math.floor((end - 1) / bs);
      // Read-modify-write: a block only partly overwritten must hold its old bytes first.
      for (const b of new Set([first, last])) {
        const blockEnd = Math.min((b + 1) * bs, this.rec.fetchLimit);
        if (this.needsFetch(b) && (offset > b * bs || end < blockEnd)) await this.ensure(b * bs, Math.min((b + 1) * bs, this.rec.size), false);
      }
      await this.waitInflight(first, last);
      this.growStates(last + 1);
      for (let b = first; b <= last; b++) {
        this.states[b] = BLOCK.DIRTY;
        this.changed.add(b);
      }
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await this.fd.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
      if (end > this.rec.size) this.rec.size = end;
      this.rec.dirty = true;
      this.rec.mtimeMs = Date.now();
      return data.length;
    });
  }

  /** SetFileSize: shrink drops the tail for good; growth adds zeros (never fetched). */
  async setSize(size: number): Promise<void> {
    return this.lock.run(async () => {
      if (size === this.rec.size) return;
      await this.waitInflight(0, this.blockCount());
      if (size < this.rec.size) {
        await this.fd.truncate(size);
        this.rec.fetchLimit = Math.min(this.rec.fetchLimit, size);
        const blocks = this.blockCount(size);
        this.states.fill(BLOCK.ABSENT, blocks);
        if (size % this.ctx.blockSize !== 0 && this.states[blocks - 1] === BLOCK.CLEAN) {
          this.states[blocks - 1] = BLOCK.DIRTY;
          this.changed.add(blocks - 1);
        }
      }
      this.rec.size = size;
      this.rec.dirty = true;
      this.rec.mtimeMs = Date.now();
    });
  }

  /** Metadata-only change (chmod, chown, utimens); reaches storage with the next upload. */
  setAttrs(attrs: Partial<FileAttrs>): void {
    Object.assign(this.rec, attrs);
    this.rec.dirty = true;
    this.ctx.statements.saveFile(this.rec);
  }

  /** Make everything written so far durable in the vault: data first (fdatasync), then the journal commit. */
  async commit(): Promise<void> {
    return this.lock.run(() => this.commitLocked());
  }

  private async commitLocked(): Promise<void> {
    if (this.unlinked) return;
    await this.fd.datasync();
    const changed = [...this.changed];
    this.changed.clear();
    this.ctx.statements.commitFile(this.rec, this.blockCount(), changed.filter((b) => this.states[b] === BLOCK.DIRTY), changed.filter((b) => this.states[b] === BLOCK.CLEAN));
  }

  /**
   * WriteData: upload the whole file if it has local changes. Missing blocks are fetched first (an object is
   * replaced whole, R53). Returns false when there was nothing to upload.
   */
  async upload(): Promise<boolean> {
    return this.lock.run(async () => {
      if (!this.rec.dirty || this.unlinked) return false;
      await this.ensureAll(0, this.rec.size);
      await this.commitLocked();
      const { meta, contentType } = this.ctx.objectMeta(this.rec, this.rec.key);
      const size = this.rec.size;
      let result;
      try {
        result = await this.ctx.storage.write(this.rec.key, size, (offset, length) => this.readLocal(offset, length), { meta, contentType });
      } catch (err) {
        if (err instanceof StorageError) {
          this.rec.lastError = err.result;
          this.ctx.statements.saveFile(this.rec);
        }
        throw err;
      }
      for (let b = 0; b < this.blockCount(); b++) {
        if (this.states[b] === BLOCK.DIRTY) {
          this.states[b] = BLOCK.CLEAN;
          this.changed.add(b);
        }
      }
      this.rec.remoteEtag = result.etag;
      this.rec.fetchLimit = size;
      this.rec.dirty = false;
      this.rec.lastError = 0;
      await this.commitLocked();
      return true;
    });
  }

  /** Bytes of this file present in the vault (for status and tests). */
  cachedBlocks(): number {
    let n = 0;
    for (let b = 0; b < this.blockCount(); b++) if (this.states[b] !== BLOCK.ABSENT) n++;
    return n;
  }

  async closeData(): Promise<void> {
    await this.lock.run(async () => {
      await this.waitInflight(0, this.blockCount());
      await this.fd.close();
    });
  }
}
