/**
 * One cached file: its record, its block map and its sparse data file (`data/<id>`, bytes at the file's own
 * offsets). Blocks are absent, clean (equal to storage) or dirty (changed locally). Bytes at or past
 * `fetchLimit` are local (zeros unless written) and never fetched, which is how truncation and extension
 * stay correct without fetching anything. Reads of absent blocks fire ReadData (ranged storage reads);
 * adjacent absent blocks are fetched in one request, concurrent readers of one block share one fetch, and
 * sequential reads open a growing read-ahead window. Every present block carries a checksum of its bytes
 * (within the file size), written with the block's state, for fsck.
 */
import { createHash } from 'node:crypto';
import { release } from 'node:os';
import { fstatSync, ftruncateSync, readSync, type BigIntStats } from 'node:fs';
import type { MultipartStorage, ObjectMeta } from '../storage/driver.js';
import { RWRESULT, StorageError } from '../storage/rwresult.js';
import type { Logger } from '../log.js';
import { BLOCK, BlockMap } from './block-map.js';
import type { DataFile } from './data-file.js';
import { blockSum } from './checksum.js';
import { OWN_TAG } from './constants.js';
import { Mutex } from './mutex.js';
import { blockSumsInFile, FetchSink } from './fetch-sink.js';
import type { PendingSums } from './pending-sums.js';
import { StreamUpload, type StreamBudget } from './stream-upload.js';
import { nextData, punchHole } from './punch-hole.js';
import type { VaultStatements } from './statements.js';
import type { TransferHandlers } from './transfer.js';

export { BLOCK } from './block-map.js';

/** Reads up to this size are done synchronously (see readLocal). */
const SYNC_READ_MAX = 128 * 1024;
/** Blocks read back at once to sum them at a commit. */
const SUM_RUN_BLOCKS = 8;

/**
 * After an upload, a file's holes (blocks never written, zeros here) become clean blocks of zeros, up to this many
 * bytes: the object holds zeros there now, and without this they would be fetched from it (a read of a sparse
 * file's gap needed the network after its upload). Larger gaps stay fetchable: counted as present, a sparse
 * disk image's gigabytes of zeros would push real data out of the vault.
 */
const HOLES_KEPT_MAX = 64 * 1024 * 1024;
/** The checksum of a whole block of zeros, per block size. */
const zeroSums = new Map<number, string>();

/** Clocks of this machine and the storage may disagree by this much. */
const CLOCK_SLACK_MS = 5000;

/** nothing to upload / uploaded and now clean / uploaded, but changed again meanwhile (still dirty). */
export type UploadOutcome = 'nothing' | 'uploaded' | 'changed';

export interface FileAttrs {
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  /** Extended attributes, encoded by the owner (opaque here); null or absent: none. */
  xattrs?: string | null;
}

export interface FileRecord extends FileAttrs {
  id: number;
  key: string;
  size: number;
  fetchLimit: number;
  remoteEtag: string | null;
  dirty: boolean;
  pinned: boolean;
  /** A local file (R44): lives only in the vault, never uploaded. */
  local: boolean;
  /** Data or size differ from storage (not only attributes). */
  dataDirty: boolean;
  lastError: number;
}

/** What the vault shares with its open files. */
export interface FileContext {
  transfer: TransferHandlers;
  statements: VaultStatements;
  blockSize: number;
  /** Largest single ranged read, in blocks. */
  fetchBlocks: number;
  /** Largest read-ahead window, in blocks. */
  readAheadBlocks: number;
  /**
   * The object's metadata for an upload. `replaces`: whatever object storage has under the key is overwritten,
   * never adopted or kept as a conflict (a directory's marker: it holds attributes only).
   */
  objectMeta: (attrs: FileAttrs, key: string) => { meta: ObjectMeta; contentType?: string; replaces?: boolean };
  /** Bytes of present blocks came (+) or went (−): the vault keeps its size accounting and evicts past its limit. */
  accountBytes: (delta: number) => void;
  /** Per file id: when an upload attempt whose outcome is unknown (a transient failure) was sent. */
  failedAttempts: Map<number, number>;
  /** Per key: when a file was created where storage had no object; trusted for absentTrustMs (VaultOptions). */
  absentAt: Map<string, number>;
  absentTrustMs: number;
  /** Back-pressure: resolves when there is room for more changed data (the upload queue is not too far behind). */
  waitForRoom: () => Promise<void>;
  /** Stream uploads (vault.streamUploads): parts of large files go while they are written. Absent: off. */
  stream?: {
    ops: MultipartStorage;
    budget: StreamBudget;
    meta: (attrs: FileAttrs, key: string) => { meta: ObjectMeta; contentType?: string };
    /** Per file id: its stream upload, which outlives the file's handles until its upload takes it. */
    active: Map<number, StreamUpload>;
  };
  /** Checksums of blocks storage wrote into the data file itself, computed when the vault is idle. Absent: at once. */
  pendingSums?: PendingSums;
  log: Logger;
}

/** Multigrain timestamps (Linux 6.13): a file's ctime moves on every change made after it was read. */
const FINE_CTIME = (() => {
  const [major = 0, minor = 0] = release().split('.').map((n) => Number.parseInt(n, 10));
  return major > 6 || (major === 6 && minor >= 13);
})();

export class CachedFile {
  openCount = 0;
  /** Set when the file was deleted while open: it lives on for its handles and is never uploaded. */
  unlinked = false;
  /** Set while its last handle closes: its descriptor is going away, so nothing may be evicted through it. */
  closing = false;
  /**
   * Handles the kernel serves by FUSE passthrough (straight from the data file, without asking the vault): while
   * any is open no block may be evicted; writers' changes are adopted by adoptExternalWrites.
   */
  passthroughOpens = 0;
  passthroughWriters = 0;
  /** Holders of every block against eviction (keepBlocks). */
  private kept = 0;
  /** While an upload runs it owns the file's stream: no new one may start (it would send every part again). */
  private uploading = false;

  /** An upload of it is under way. */
  get isUploading(): boolean {
    return this.uploading;
  }
  private externalStamp: string | undefined;
  private externalMtimeNs = 0n;
  /** The data file's stat taken by completeDataFd, good until the end of that synchronous turn. */
  private openStat: BigIntStats | undefined;
  /** When a time was last set explicitly (utimens): a passthrough write adopted later must not undo it. */
  private timesSetAt = 0;
  private readonly lock = new Mutex();
  private readonly uploadLock = new Mutex();
  private readonly inflight = new Map<number, Promise<void>>();
  private readonly changed = new Set<number>();
  /**
   * The lowest block a shrink cleared since the last commit. The journal's rows from there on are dropped at the
   * next commit: a file cut and grown back before it would otherwise keep the old rows of blocks that are now
   * zeros (a cut to 0 and a write at 2 MiB left blocks 0 and 1 journaled with their old checksums).
   */
  private cutFrom = Number.POSITIVE_INFINITY;
  private readonly blocks: BlockMap;
  /** Bumped by every change (data, size, attributes): an upload is current only if it did not move. */
  private gen = 0;
  private committedGen = 0;
  /** Bumped by changes to the data file; a commit with none since the last needs no fdatasync. */
  private dataGen = 0;
  private syncedDataGen = 0;
  /**
   * The smallest size the file had since the running upload read it. Bytes past it that are absent now are zeros
   * here (cut by a truncate, then grown back), but hold the old bytes in the object that upload leaves: they must
   * not be fetched from it.
   */
  private sizeFloor = Number.POSITIVE_INFINITY;
  private lastReadEnd = -1;
  private window = 0;
  /** First block not yet requested by read-ahead. */
  private aheadNext = 0;

  constructor(
    private readonly ctx: FileContext,
    readonly rec: FileRecord,
    states: Uint8Array,
    private readonly fd: DataFile,
  ) {
    this.blocks = new BlockMap(states);
  }

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
    return this.blocks.get(b) === BLOCK.ABSENT && b * this.ctx.blockSize < this.rec.fetchLimit;
  }

  private setState(b: number, state: typeof BLOCK.CLEAN | typeof BLOCK.DIRTY): void {
    this.blocks.set(b, state);
  }

  /** Bytes the present blocks hold within the file size (what the vault's size limit counts). */
  private presentBytes(): number {
    const bs = this.ctx.blockSize;
    let bytes = this.blocks.present * bs;
    const last = this.blockCount() - 1;
    if (last >= 0 && this.blocks.get(last) !== BLOCK.ABSENT) bytes -= bs - (this.rec.size - last * bs);
    return Math.max(0, bytes);
  }

  /** Run a synchronous change of block states or size, and report how the present bytes moved. */
  private accounted(change: () => void): void {
    const before = this.presentBytes();
    change();
    const delta = this.presentBytes() - before;
    if (delta) this.ctx.accountBytes(delta);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset >= this.rec.size || length <= 0) return Buffer.alloc(0);
    const end = Math.min(this.rec.size, offset + length);
    const first = Math.floor(offset / this.ctx.blockSize);
    const last = Math.floor((end - 1) / this.ctx.blockSize);
    this.blocks.hold(first, last);
    this.ctx.pendingSums?.touch();
    try {
      await this.ensure(offset, end, true);
      this.blocks.touch(first, last);
      return await this.readLocal(offset, end - offset);
    } finally {
      this.blocks.release(first, last);
    }
  }

  /**
   * A read whose bytes the caller sends straight from the data file (`send(fd, offset, length)`; the FUSE adapter
   * does it on a worker thread): the blocks are made local first and held against eviction until send settles.
   */
  async readInto(offset: number, length: number, send: (fd: number, offset: number, length: number) => Promise<void>): Promise<void> {
    if (offset >= this.rec.size || length <= 0) return send(this.fd.fd, offset, 0);
    const end = Math.min(this.rec.size, offset + length);
    const first = Math.floor(offset / this.ctx.blockSize);
    const last = Math.floor((end - 1) / this.ctx.blockSize);
    this.blocks.hold(first, last);
    try {
      await this.ensure(offset, end, true);
      this.blocks.touch(first, last);
      // Past the data file's end the file reads as zeros: make the data file that long, so they are read as such.
      if (fstatSync(this.fd.fd).size < end) ftruncateSync(this.fd.fd, this.rec.size);
      await send(this.fd.fd, offset, end - offset);
    } finally {
      this.blocks.release(first, last);
    }
  }

  /** Bytes from the data file; past its end the file is sparse, so zeros. */
  private async readLocal(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    let done = 0;
    // Small reads (a FUSE read, 4 KiB to 128 KiB) straight from the page cache: the thread-pool round trip of an
    // asynchronous read was most of a warm random read's latency (profiles of fio 4K).
    if (length <= SYNC_READ_MAX) done = readSync(this.fd.fd, buf, 0, length, offset);
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
   * Sequential access grows a window (1, 2, 4 … blocks) and fetches it ahead in ranged reads, topped up as the
   * reader consumes it; a jump resets it, so random reads fetch only what they touch.
   */
  private readAhead(start: number, end: number, last: number): void {
    // The kernel sends a sequential reader's requests a few at a time and they may arrive out of order (a block
    // before the one ahead of it, seen twice per GiB of dd): a read that close to the end keeps a running window.
    const slack = Math.max(this.ctx.blockSize, end - start);
    const near = this.window > 0 && start >= this.lastReadEnd - 2 * slack && start <= this.lastReadEnd + slack;
    const sequential = start === this.lastReadEnd || near;
    this.lastReadEnd = near ? Math.max(this.lastReadEnd, end) : end;
    if (!sequential) {
      this.window = 0;
      this.aheadNext = 0;
      return;
    }
    this.window = Math.min(Math.max(1, this.window * 2), this.ctx.readAheadBlocks);
    // Top the window up as soon as a whole ranged read's worth of it has been consumed: transfers stay in flight,
    // each a full ranged read (one block more would split off a lone 1-block request every time).
    if (this.window === 0 || this.aheadNext > last + this.window - Math.min(this.window, this.ctx.fetchBlocks) + 1) return;
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
    const pendingSums = this.ctx.pendingSums;
    pendingSums?.fetchStarted();
    try {
      const length = Math.min((last + 1) * bs, this.rec.fetchLimit) - offset;
      const spanOf = (b: number): number => Math.min(bs, this.rec.size - b * bs);
      const etag = this.rec.remoteEtag ?? undefined;
      // Undefined: the checksums are left to pendingSums.
      let sums: Map<number, string> | undefined;
      // Storage writes the range into the data file itself when it can (libcurl), if the range is whole blocks
      // of the file: then every byte the checksums cover is storage's.
      const whole = offset + length === Math.min((last + 1) * bs, this.rec.size);
      const transfer = this.ctx.transfer;
      if (etag !== undefined && whole && transfer.readDataToFile && (await transfer.readDataToFile(this.rec.key, offset, length, etag, this.fd.fd, offset))) {
        // Summing means reading the bytes back: that waits until the vault is idle, rather than the reader.
        if (!pendingSums) sums = blockSumsInFile(this.fd.fd, first, last, bs, spanOf);
      } else {
        const sink = new FetchSink(this.fd.fd, offset, this.rec.fetchLimit, bs, spanOf);
        const r = transfer.readDataInto
          ? await transfer.readDataInto(this.rec.key, offset, length, etag, sink.push)
          : await transfer.readData(this.rec.key, offset, length, etag).then((d) => (sink.push(d.data), { bytes: d.data.length, result: d.result }));
        // RANGE_BEYOND_EOF / PARTIAL: the object is shorter than expected; the tail stays zero (R47).
        if (r.result !== RWRESULT.SUCCESS) this.ctx.log.warn({ key: this.rec.key, offset, length, got: r.bytes }, 'storage returned less than requested; tail zeroed');
        sums = sink.finish(last);
      }
      const clean: { idx: number; sum: string | null }[] = [];
      this.accounted(() => {
        for (let b = first; b <= last && b < this.blockCount(); b++) {
          if (this.blocks.get(b) !== BLOCK.ABSENT) continue;
          this.setState(b, BLOCK.CLEAN);
          clean.push({ idx: b, sum: sums ? sums.get(b)! : null });
        }
      });
      this.ctx.statements.putBlocks(this.rec.id, clean, BLOCK.CLEAN);
      if (!sums) pendingSums?.add(this.rec.id, clean.map((c) => c.idx));
    } catch (err) {
      if (err instanceof StorageError) this.rec.lastError = err.result;
      throw err;
    } finally {
      for (let b = first; b <= last; b++) this.inflight.delete(b);
      pendingSums?.fetchEnded();
    }
  }

  /** Whether block b holds what storage has and nothing is writing it: what a deferred checksum may cover. */
  isSettledClean(b: number): boolean {
    return this.blocks.get(b) === BLOCK.CLEAN && !this.inflight.has(b);
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
    await this.ctx.waitForRoom();
    return this.lock.run(async () => {
      const bs = this.ctx.blockSize;
      const end = offset + data.length;
      const first = Math.floor(offset / bs);
      const last = Math.floor((end - 1) / bs);
      // Until they are dirty, the blocks are held against eviction: the first block's old bytes, fetched while the
      // last one's fetch ran, were evicted meanwhile, and the block then marked dirty over a punched hole (fsx).
      this.blocks.hold(first, last);
      try {
        // Read-modify-write: a block only partly overwritten must hold its old bytes first.
        for (const b of new Set([first, last])) {
          const blockEnd = Math.min((b + 1) * bs, this.rec.fetchLimit);
          if (this.needsFetch(b) && (offset > b * bs || end < blockEnd)) await this.ensure(b * bs, Math.min((b + 1) * bs, this.rec.size), false);
        }
        await this.waitInflight(first, last);
        this.accounted(() => {
          this.markDirty(first, last);
          if (end > this.rec.size) this.rec.size = end;
        });
      } finally {
        this.blocks.release(first, last);
      }
      // Before any byte moves: an upload reading the data file concurrently must see that it changed.
      this.gen++;
      this.dataGen++;
      this.rec.dataDirty = true;
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await this.fd.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
      this.rec.dirty = true;
      this.rec.mtimeMs = Date.now();
      return data.length;
    });
  }

  private markDirty(first: number, last: number): void {
    for (let b = first; b <= last; b++) {
      this.setState(b, BLOCK.DIRTY);
      this.changed.add(b);
    }
  }

  /**
   * SetFileSize: shrink drops the tail for good; growth adds zeros (never fetched). With fetchMissingData
   * (FileSetSize's FetchMissingData), every block still in storage is brought into the vault as well.
   */
  async setSize(size: number, fetchMissingData = false): Promise<void> {
    await this.resize(size);
    if (fetchMissingData) await this.fetchAll();
  }

  private async resize(size: number): Promise<void> {
    return this.lock.run(async () => {
      // The kernel may have written past the size the vault knows: a truncate to that stale size would be skipped.
      this.adoptIfWritten();
      const old = this.rec.size;
      if (size === old) return;
      await this.waitInflight(0, this.blockCount());
      this.gen++;
      this.dataGen++;
      this.rec.dataDirty = true;
      const bs = this.ctx.blockSize;
      // Growth too: the data file's end is the file's (a passthrough reader sees the data file as it is).
      await this.fd.truncate(size);
      this.accounted(() => {
        if (size < old) {
          this.rec.fetchLimit = Math.min(this.rec.fetchLimit, size);
          this.sizeFloor = Math.min(this.sizeFloor, size);
          const blocks = this.blockCount(size);
          this.blocks.clearFrom(blocks);
          this.cutFrom = Math.min(this.cutFrom, blocks);
          // The block that now ends the file changed (its tail is gone).
          if (size % bs !== 0 && this.blocks.get(blocks - 1) !== BLOCK.ABSENT) this.markDirty(blocks - 1, blocks - 1);
        } else if (old % bs !== 0 && this.blocks.get(Math.floor(old / bs)) !== BLOCK.ABSENT) {
          // The block that ended the file now has zeros after the old end.
          this.markDirty(Math.floor(old / bs), Math.floor(old / bs));
        }
        this.rec.size = size;
      });
      this.rec.dirty = true;
      this.rec.mtimeMs = Date.now();
    });
  }

  /**
   * SEEK_DATA (hole=false) / SEEK_HOLE (hole=true), at block granularity: a hole is a block never written that
   * storage does not hold either (past fetchLimit), i.e. reads as zeros without being stored anywhere.
   * null: no such offset (ENXIO).
   */
  seekData(offset: number, hole: boolean): number | null {
    this.adoptIfWritten();
    const size = this.rec.size;
    if (offset >= size || offset < 0) return null;
    const bs = this.ctx.blockSize;
    for (let b = Math.floor(offset / bs); b * bs < size; b++) {
      const isHole = this.blocks.get(b) === BLOCK.ABSENT && b * bs >= this.rec.fetchLimit;
      if (isHole === hole) return Math.max(offset, b * bs);
    }
    return hole ? size : null;
  }

  /** Metadata-only change (chmod, chown, utimens); reaches storage with the next upload. */
  setAttrs(attrs: Partial<FileAttrs>): void {
    if (attrs.mtimeMs !== undefined) {
      this.timesSetAt = Date.now();
      // An explicit mtime must reach storage: a stream upload (started without one) can no longer serve.
      this.ctx.stream?.active.get(this.rec.id)?.markTimesSet();
    }
    Object.assign(this.rec, attrs);
    this.rec.dirty = true;
    this.gen++;
  }

  /** Changed since its last commit (the vault then saves the record when the file closes). */
  get uncommitted(): boolean {
    return this.gen !== this.committedGen;
  }

  /**
   * Checksums of the given blocks (ascending), read back from the data file in runs of up to SUM_RUN_BLOCKS
   * through one buffer: a fresh megabyte per block made a commit of a large file (an fsync after a passthrough
   * write adopts every block) fault in new memory block by block, most of its time on this VM.
   */
  private async sumBlocks(blocks: number[]): Promise<Map<number, string>> {
    const sums = new Map<number, string>();
    if (!blocks.length) return sums;
    const bs = this.ctx.blockSize;
    // No larger than the longest run can read: a small file's commit must not take (and fault in) a megabyte.
    const buf = Buffer.allocUnsafe(Math.max(1, Math.min(bs * Math.min(SUM_RUN_BLOCKS, blocks.length), this.rec.size - blocks[0]! * bs)));
    for (let i = 0; i < blocks.length; ) {
      let j = i + 1;
      while (j < blocks.length && j - i < SUM_RUN_BLOCKS && blocks[j] === blocks[j - 1] + 1) j++;
      const start = blocks[i] * bs;
      const data = await this.readLocal(start, Math.min((blocks[j - 1] + 1) * bs, this.rec.size) - start, buf);
      for (let k = i; k < j; k++) sums.set(blocks[k], blockSum(data.subarray((k - i) * bs, (k - i + 1) * bs)));
      i = j;
    }
    return sums;
  }

  /**
   * Commit everything written so far to the vault's journal. Always safe from a crash of the process once it
   * returns (the data file's bytes and the commit are with the OS). `durable` (fsync): also on disk — data first
   * (fdatasync), then a synchronous journal commit — so a crash of the machine keeps it too.
   */
  async commit(durable = true): Promise<void> {
    return this.lock.run(() => this.commitLocked(durable));
  }

  private async commitLocked(durable: boolean, also?: () => void, batched = false): Promise<void> {
    if (this.unlinked) return;
    this.committedGen = this.gen;
    // Nothing new since the last commit (a release after its close's flush, an upload's first step): the
    // journal already says it all. A durable commit still runs: the last one may not be on disk yet.
    if (!durable && !also && this.changed.size === 0 && this.cutFrom === Number.POSITIVE_INFINITY && this.ctx.statements.isSaved(this.rec)) return;
    // The data file's fdatasync runs while the changed blocks are read back and summed (both from the page
    // cache): an fsync after a large passthrough write costs the longer of the two, not their sum. The journal
    // commit still waits for it, so the journal never names data the disk may not have.
    let synced: Promise<void> | undefined;
    if (durable && this.dataGen !== this.syncedDataGen) {
      const target = this.dataGen;
      synced = this.fd.datasync().then(() => void (this.syncedDataGen = target));
      synced.catch(() => undefined); // awaited below; a failure must not surface as unhandled meanwhile
    }
    const changed = [...this.changed].filter((b) => b < this.blockCount()).sort((a, b) => a - b);
    this.changed.clear();
    const cutFrom = this.cutFrom;
    this.cutFrom = Number.POSITIVE_INFINITY;
    const dirty: { idx: number; sum: string }[] = [];
    const clean: { idx: number; sum: null }[] = [];
    try {
      const dirtyBlocks: number[] = [];
      for (const b of changed) {
        const state = this.blocks.get(b);
        if (state === BLOCK.DIRTY) dirtyBlocks.push(b);
        else if (state === BLOCK.CLEAN) clean.push({ idx: b, sum: null });
      }
      for (const [b, sum] of await this.sumBlocks(dirtyBlocks)) dirty.push({ idx: b, sum });
      await synced;
    } catch (err) {
      for (const b of changed) this.changed.add(b); // not committed: the next commit takes them again
      this.cutFrom = Math.min(this.cutFrom, cutFrom);
      throw err;
    }
    // Removed meanwhile: its record is gone, and its id may already be another file's.
    if (this.unlinked) return;
    // Rows go in as the blocks are when the transaction runs, which may be a turn or a batch later: a block evicted
    // meanwhile (its row dropped, its bytes punched out) must not come back as clean (it then read as zeros: fsx
    // lost 32 KiB that way, the eviction falling between an upload's end and its batched commit). A block that
    // changed otherwise since was taken into `changed` again, for the next commit.
    const rows = (): { dropFrom: number; dirty: { idx: number; sum: string }[]; clean: { idx: number; sum: null }[] } => ({
      dropFrom: Math.min(cutFrom, this.blockCount()),
      dirty: dirty.filter((b) => this.blocks.get(b.idx) === BLOCK.DIRTY),
      clean: clean.filter((b) => this.blocks.get(b.idx) === BLOCK.CLEAN),
    });
    if (!batched) {
      const r = rows();
      return this.ctx.statements.commitFile(this.rec, r.dropFrom, r.dirty, r.clean, durable, also);
    }
    // The record as it is when the batch commits, as the direct commit wrote it: a change that takes no lock (a
    // pin) made meanwhile is kept, not overwritten by an older copy.
    await this.ctx.statements.batched(() => {
      if (this.unlinked) return;
      const r = rows();
      this.ctx.statements.commitFile(this.rec, r.dropFrom, r.dirty, r.clean, false, also);
    });
  }

  /**
   * WriteData: upload the whole file if it has local changes. Missing blocks are fetched first (an object is
   * replaced whole, R53). Writers are not held up by the transfer: a change made while it runs bumps the
   * file's generation, which makes the driver abandon a multipart upload before completing it
   * (FILE_MODIFIED_LOCALLY), or leaves the file dirty after a single PUT of the earlier snapshot — either way
   * the newer data is uploaded next and the older upload never wins. Unless `force`, the remote object must
   * still be the version the cached copy is based on (FILE_MODIFIED_EXTERNALLY otherwise). `toKey` uploads
   * under another key (a conflict copy).
   */
  async upload(options: { force?: boolean; toKey?: string } = {}): Promise<UploadOutcome> {
    // One upload of a file at a time (the write-back queue and a sync close may both ask): the second one
    // starts from what the first left.
    return this.uploadLock.run(async () => {
      this.uploading = true;
      try {
        return await this.uploadOnce(options);
      } finally {
        this.uploading = false;
      }
    });
  }

  private async uploadOnce(options: { force?: boolean; toKey?: string }): Promise<UploadOutcome> {
    // A stream upload is this attempt's to complete or to abort, whatever happens.
    const stream = this.takeStream();
    const prep = await this.lock.run(async () => {
      if (!this.rec.dirty || this.unlinked || this.rec.local) return null;
      // Only attributes changed (chmod, utimens) on an object that exists: no data needs to move.
      const metaOnly = !this.rec.dataDirty && this.rec.remoteEtag !== null && !options.toKey;
      if (!metaOnly) await this.ensureAll(0, this.rec.size);
      await this.commitLocked(false);
      // The stream's early parts serve only if the object's metadata is what the stream started with, less an
      // mtime nobody set explicitly (LastModified stands for it).
      const streamMeta = stream && this.ctx.stream && !metaOnly && !options.toKey && stream.key === this.rec.key && !stream.timesSet ? this.ctx.stream.meta(this.rec, this.rec.key) : undefined;
      const streamOk = streamMeta !== undefined && JSON.stringify(streamMeta) === JSON.stringify(stream!.meta);
      if (stream && !streamOk) this.ctx.log.debug({ key: this.rec.key }, 'stream upload: not usable (metadata or name changed); the file goes whole');
      this.sizeFloor = this.rec.size;
      // What is still absent now that every block the old object holds is here: holes, zeros on both sides once
      // this upload lands.
      const holes: number[] = [];
      if (!metaOnly) for (let b = 0; b < this.blockCount(); b++) if (this.blocks.get(b) === BLOCK.ABSENT && !this.needsFetch(b)) holes.push(b);
      return { holes, gen: this.gen, metaOnly, size: this.rec.size, key: options.toKey ?? this.rec.key, base: this.rec.remoteEtag, streamOk, ...this.ctx.objectMeta(this.rec, this.rec.key) };
    });
    if (!prep) {
      await stream?.abort();
      return 'nothing';
    }
    const attemptAt = Date.now();
    let result;
    let journaled = false;
    let resumed = false;
    try {
      let landed: string | undefined;
      // A file just created where storage had nothing (the owner checked moments ago) needs no second look.
      const absentAt = this.ctx.absentAt.get(prep.key);
      const knownAbsent = prep.base === null && absentAt !== undefined && Date.now() - absentAt <= this.ctx.absentTrustMs && !this.ctx.failedAttempts.has(this.rec.id);
      if (!options.force && !options.toKey && !knownAbsent && !prep.replaces) {
        const remote = await this.ctx.transfer.statData(prep.key);
        if (remote && remote.etag !== prep.base) {
          // An earlier attempt whose answer was lost may have landed: the object is then exactly our bytes.
          if (!prep.metaOnly && remote.size === prep.size && !remote.etag.includes('-') && remote.etag === (await this.md5(prep.size))) landed = remote.etag;
          // Written while an attempt of ours was under way whose answer never came: that attempt, perhaps cut
          // short by the network (some servers keep what they received). Not another writer's: replace it.
          else if (this.ctx.failedAttempts.has(this.rec.id) && remote.lastModified.getTime() >= this.ctx.failedAttempts.get(this.rec.id)! - CLOCK_SLACK_MS) landed = undefined;
          else throw new StorageError(RWRESULT.FILE_MODIFIED_EXTERNALLY, 'write', prep.key, `the object changed in storage (ETag ${remote.etag}; the local copy is based on ${prep.base ?? 'no object'})`);
        }
      }
      // Journaled before a byte leaves: after a crash mid-upload, whatever storage kept of it (some servers keep
      // a cut-short PUT) is recognised on restart as this attempt's, not taken for another writer's object.
      if (!this.ctx.failedAttempts.has(this.rec.id) && !this.unlinked) {
        const { id } = this.rec;
        await this.ctx.statements.batched(() => {
          if (!this.unlinked) this.ctx.statements.putTag(id, OWN_TAG.ATTEMPT, Buffer.from(String(attemptAt)));
        });
        journaled = true;
      }
      const writing = !(landed !== undefined && this.gen === prep.gen) && !prep.metaOnly;
      const resume = writing && prep.streamOk ? await stream!.reusable(prep.size, this.partReader) : undefined;
      if (stream && !resume) await stream.abort();
      resumed = resume !== undefined;
      result = !writing
        ? prep.metaOnly
          ? await this.ctx.transfer.replaceMeta(prep.key, { meta: prep.meta, contentType: prep.contentType })
          : { etag: landed!, result: RWRESULT.SUCCESS }
        : await this.ctx.transfer.writeData(prep.key, prep.size, (offset, length, into) => this.readLocal(offset, length, into), {
            ...(resume ? stream!.meta : { meta: prep.meta, contentType: prep.contentType }),
            stillValid: () => this.gen === prep.gen && !this.unlinked,
            resume,
          });
    } catch (err) {
      if (resumed) {
        // The driver aborted the multipart upload when the write failed: nothing of the stream is left.
        stream!.finished();
        if (!this.unlinked) this.ctx.statements.deleteTag(this.rec.id, OWN_TAG.STREAM);
      } else await stream?.abort();
      // A transient failure may hide a request that reached the storage: remember when it was sent.
      // (So may one abandoned because the file changed meanwhile.) Refused outright: nothing of it reached storage.
      const unknown = err instanceof StorageError && (err.transient || err.result === RWRESULT.FILE_MODIFIED_LOCALLY);
      if (unknown && !this.ctx.failedAttempts.has(this.rec.id)) this.ctx.failedAttempts.set(this.rec.id, attemptAt);
      else if (!unknown && journaled && !this.unlinked) this.ctx.statements.deleteTag(this.rec.id, OWN_TAG.ATTEMPT);
      if (err instanceof StorageError && err.result !== RWRESULT.FILE_MODIFIED_LOCALLY) {
        this.rec.lastError = err.result;
        if (!this.unlinked) this.ctx.statements.saveFile(this.rec);
      }
      throw err;
    }
    const attempted = this.ctx.failedAttempts.delete(this.rec.id) || journaled;
    this.ctx.absentAt.delete(prep.key);
    return this.lock.run(async () => {
      const same = this.gen === prep.gen;
      this.rec.remoteEtag = result.etag;
      this.rec.lastError = 0;
      if (this.unlinked) return 'changed';
      // The new ETag, the end of the attempt and the blocks now clean go into the journal in one transaction.
      const { id } = this.rec;
      if (resumed) stream!.finished();
      /** Holes kept as clean zeros (keepHoles below), journaled with the rest of the upload's end. */
      let zeros: { idx: number; sum: string }[] = [];
      const tags = () => {
        // As the other rows: only those still clean when the batch commits (eviction may have taken some).
        this.ctx.statements.putBlocks(id, zeros.filter((z) => this.blocks.get(z.idx) === BLOCK.CLEAN), BLOCK.CLEAN);
        if (attempted) this.ctx.statements.deleteTag(id, OWN_TAG.ATTEMPT);
        if (resumed) this.ctx.statements.deleteTag(id, OWN_TAG.STREAM);
        this.ctx.statements.putTag(id, OWN_TAG.ETAG, Buffer.from(result.etag || '-'));
        if (result.versionId) this.ctx.statements.putTag(id, OWN_TAG.VERSION_ID, Buffer.from(result.versionId));
      };
      if (same) {
        for (let b = 0; b < this.blockCount(); b++) {
          if (this.blocks.get(b) === BLOCK.DIRTY) {
            this.blocks.set(b, BLOCK.CLEAN);
            this.changed.add(b);
          }
        }
        this.rec.fetchLimit = prep.size;
        this.rec.dirty = false;
        this.rec.dataDirty = false;
      } else {
        // Changed meanwhile: the object holds the file as it was read, which is the file's only up to the smallest
        // size it had since (a truncate followed by growth left zeros here where the object has the old bytes).
        this.rec.fetchLimit = Math.min(prep.size, this.rec.size, this.sizeFloor);
      }
      zeros = this.keepHoles(prep.holes);
      // S3 has it now: losing this commit only means uploading again. So it waits for the end of the turn, to share
      // one transaction with the other uploads that ended in it.
      await this.commitLocked(false, tags, true);
      return same ? 'uploaded' : 'changed';
    });
  }

  /**
   * An upload landed: the holes it read (absent then) that are still absent and would now be fetched from the
   * object become clean blocks of zeros — what the data file holds there, and what the upload sent — if they are
   * few enough (HOLES_KEPT_MAX). Still absent means nothing wrote them since (a write makes a block dirty; only a
   * truncate makes one absent again, and the fetch limit stays below such a cut). Returns them with checksums.
   */
  private keepHoles(holes: number[]): { idx: number; sum: string }[] {
    const bs = this.ctx.blockSize;
    const count = this.blockCount();
    const kept = holes.filter((b) => b < count && this.needsFetch(b));
    if (kept.length === 0 || kept.length * bs > HOLES_KEPT_MAX) return [];
    // A block's checksum covers its bytes within the file: the last one may be short.
    const tail = this.rec.size - (count - 1) * bs;
    let full = zeroSums.get(bs);
    if (full === undefined) zeroSums.set(bs, (full = blockSum(Buffer.alloc(bs))));
    this.accounted(() => {
      for (const b of kept) this.blocks.set(b, BLOCK.CLEAN);
    });
    return kept.map((b) => ({ idx: b, sum: b === count - 1 && tail < bs ? blockSum(Buffer.alloc(tail)) : full }));
  }

  /** MD5 of the first `size` bytes (what S3 gives a single-part object as its ETag). */
  private async md5(size: number): Promise<string> {
    const hash = createHash('md5');
    const chunk = 4 * 1024 * 1024;
    for (let off = 0; off < size; off += chunk) hash.update(await this.readLocal(off, Math.min(chunk, size - off)));
    return hash.digest('hex');
  }

  /** FileSetSize(FetchMissingData) / prefetch: bring every block of the file into the vault. */
  async fetchAll(onProgress?: (bytes: number) => void): Promise<void> {
    const span = this.ctx.blockSize * this.ctx.fetchBlocks * 4;
    for (let s = 0; s < this.rec.size; s += span) {
      const end = Math.min(this.rec.size, s + span);
      await this.ensure(s, end, false);
      onProgress?.(end - s);
    }
  }

  /** Every byte of the file is in the vault: nothing of it is left to fetch from storage. */
  holdsWhole(): boolean {
    for (let b = 0; b < this.blockCount(); b++) if (this.needsFetch(b)) return false;
    return true;
  }

  /** Bytes of this file the vault holds (what its size limit counts). */
  heldBytes(): number {
    return this.presentBytes();
  }

  /** Present blocks and dirty blocks, for status and tests. */
  cachedBlocks(): number {
    return this.blockCount() - this.blocks.count(BLOCK.ABSENT, this.blockCount());
  }

  dirtyBlocks(): number {
    return this.blocks.count(BLOCK.DIRTY, this.blockCount());
  }

  /**
   * Eviction candidates of an open file: clean blocks nobody is reading or fetching, with their last use.
   * A file with changes keeps every block until it is uploaded (the upload needs them, R53).
   */
  evictable(): { file: CachedFile; block: number; used: number }[] {
    if (this.rec.pinned || this.rec.dirty || this.unlinked || this.closing || this.passthroughOpens > 0 || this.kept > 0) return [];
    const out: { file: CachedFile; block: number; used: number }[] = [];
    for (let b = 0; b < this.blockCount(); b++) {
      if (this.blocks.get(b) === BLOCK.CLEAN && !this.blocks.isHeld(b) && !this.inflight.has(b)) out.push({ file: this, block: b, used: this.blocks.lastUse(b) });
    }
    return out;
  }

  /**
   * Hold every block of the file against eviction until the returned function is called: for a caller that fetches
   * the whole file and then takes its object away (a rename that makes it local, or moves its pending changes), the
   * fetched blocks must still be here when nothing else holds them.
   */
  keepBlocks(): () => void {
    this.kept++;
    let done = false;
    return () => {
      if (!done) this.kept--;
      done = true;
    };
  }

  /** Evict one clean block: forget it and give its disk space back. Synchronous, so no read slips in between. */
  evictBlock(b: number): boolean {
    if (this.blocks.get(b) !== BLOCK.CLEAN || this.blocks.isHeld(b) || this.inflight.has(b) || this.rec.dirty || this.closing || this.passthroughOpens > 0 || this.kept > 0) return false;
    const start = b * this.ctx.blockSize;
    if (!punchHole(this.fd.fd, start, Math.min(this.ctx.blockSize, this.rec.size - start))) return false;
    this.accounted(() => this.blocks.set(b, BLOCK.ABSENT));
    this.ctx.statements.dropBlock(this.rec.id, b);
    return true;
  }

  /**
   * The data file's descriptor when it alone can answer every read of the file (FUSE passthrough): no block is
   * still in storage only, and no fetch is writing into it.
   */
  completeDataFd(): number | undefined {
    if (this.inflight.size) return undefined;
    for (let b = 0; b < this.blockCount(); b++) if (this.needsFetch(b)) return undefined;
    // The kernel reads the data file up to its own end, not the file's size: make them one. Growth is zeros,
    // which is what the vault reads there too; a longer data file would show stale bytes.
    const st = fstatSync(this.fd.fd, { bigint: true });
    if (Number(st.size) !== this.rec.size) ftruncateSync(this.fd.fd, this.rec.size);
    else {
      // A writable passthrough open asks for the same facts next, in this same turn (watchExternalWrites).
      this.openStat = st;
      queueMicrotask(() => (this.openStat = undefined));
    }
    return this.fd.fd;
  }

  /**
   * Stream uploads: send the parts the writer has moved past. Only a file written from its start (nothing of an
   * older object left to fetch into it) and at least three parts long streams; called while it is open.
   */
  pumpStream(): void {
    const cfg = this.ctx.stream;
    if (!cfg || this.uploading || this.unlinked || this.closing || this.rec.local || !this.rec.dataDirty) return;
    // Passthrough writes reach the data file without the vault: its size is how far the writer got.
    const written = fstatSync(this.fd.fd).size;
    const { id } = this.rec;
    let stream = cfg.active.get(id);
    if (!stream) {
      if (this.rec.fetchLimit > 0 || written < 3 * cfg.ops.partSize) return;
      const key = this.rec.key;
      const journal = (uploadId: string | null) => {
        // A removed file's record is gone, and its tags with it.
        if (!this.ctx.statements.isKnown(id)) return;
        if (uploadId === null) this.ctx.statements.deleteTag(id, OWN_TAG.STREAM);
        else this.ctx.statements.putTag(id, OWN_TAG.STREAM, Buffer.from(JSON.stringify({ key, uploadId })));
      };
      stream = new StreamUpload(cfg.ops, cfg.budget, key, cfg.meta(this.rec, key), this.ctx.blockSize, journal, this.ctx.log);
      cfg.active.set(id, stream);
    }
    stream.advance(written, this.partReader);
  }

  /** Reads for a stream upload, through this handle's data file. */
  private readonly partReader = (offset: number, length: number, into: Buffer) => this.readLocal(offset, length, into);

  /** Take this file's stream upload, if one runs: the caller completes or aborts it. */
  private takeStream(): StreamUpload | undefined {
    const stream = this.ctx.stream?.active.get(this.rec.id);
    this.ctx.stream?.active.delete(this.rec.id);
    return stream;
  }

  /** Drop the stream upload, if one runs (the file was removed). */
  async abortStream(): Promise<void> {
    await this.takeStream()?.abort();
  }

  /** Before the first passthrough writer: the data file as the vault left it (what later writes are told from). */
  watchExternalWrites(): void {
    if (this.passthroughWriters > 0) return;
    const st = this.openStat ?? fstatSync(this.fd.fd, { bigint: true });
    this.openStat = undefined;
    this.externalStamp = `${st.ctimeNs}:${st.size}`;
    this.externalMtimeNs = st.mtimeNs;
  }

  /**
   * Before anything that depends on the file's size or blocks: take in what passthrough handles wrote. Every such
   * change goes through the data file, not the vault, so the vault's size and block states lag until adopted.
   */
  adoptIfWritten(): void {
    if (this.passthroughWriters > 0) this.adoptExternalWrites();
  }

  /** The data file's descriptor, whatever it holds (a passthrough handle opened beside others must share it). */
  get dataFd(): number {
    return this.fd.fd;
  }

  /**
   * Take in what the kernel wrote to the data file through passthrough handles, which the vault never saw: the
   * size is the data file's, and every block counts as changed (the upload sends the whole object anyway).
   */
  adoptExternalWrites(): void {
    const st = fstatSync(this.fd.fd, { bigint: true });
    // Kernels with fine-grained ctime (6.13+) change it on every write after it was looked at: unchanged means
    // nothing was written since the last look. Elsewhere every look counts as a change.
    const stamp = `${st.ctimeNs}:${st.size}`;
    if (FINE_CTIME && stamp === this.externalStamp) return;
    this.externalStamp = stamp;
    const size = Number(st.size);
    const count = this.blockCount(size);
    const bs = this.ctx.blockSize;
    this.accounted(() => {
      if (size < this.rec.size) {
        this.blocks.clearFrom(count);
        this.cutFrom = Math.min(this.cutFrom, count);
        this.rec.fetchLimit = Math.min(this.rec.fetchLimit, size);
        this.sizeFloor = Math.min(this.sizeFloor, size);
      }
      this.rec.size = size;
      // Every block that holds data counts as changed; a hole the kernel never wrote stays a hole (SEEK_HOLE).
      for (let b = 0; b < count; b++) {
        if (this.blocks.get(b) === BLOCK.ABSENT && !this.needsFetch(b)) {
          const data = nextData(this.fd.fd, b * bs);
          if (data === null) break;
          if (data >= (b + 1) * bs) {
            b = Math.floor(data / bs) - 1;
            continue;
          }
        }
        this.markDirty(b, b);
      }
    });
    this.gen++;
    this.dataGen++;
    this.rec.dataDirty = true;
    this.rec.dirty = true;
    // The time of the last write through the kernel, unless a time was set (utimens) after it.
    const written = Number(st.mtimeNs / 1_000_000n);
    if (st.mtimeNs !== this.externalMtimeNs && written > this.timesSetAt) this.rec.mtimeMs = written;
    this.externalMtimeNs = st.mtimeNs;
  }

  async closeData(): Promise<void> {
    await this.lock.run(async () => {
      await this.waitInflight(0, this.blockCount());
      // A stream upload may be reading a part through this descriptor: that read ends first.
      await this.ctx.stream?.active.get(this.rec.id)?.readsDone();
      await this.fd.close(this.rec.size);
    });
  }
}
