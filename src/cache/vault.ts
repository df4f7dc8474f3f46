/**
 * The vault (CBCache model): a directory holding `vault.db` (SQLite, the journal) and `data/<id>` (one
 * sparse data file per cached file). It opens cached files by key (case-sensitive), keeps their records,
 * tags and pins, bounds its size by evicting clean blocks least recently used, and on open recovers from an
 * unclean stop (clean blocks are forgotten and refetched; dirty blocks are kept — the orphans its owner flushes:
 * after a crash of the process their bytes are with the OS, after a crash of the machine those of files fsync'd;
 * `fsck` finds the others by their checksums). It knows storage only through the StorageDriver interface.
 */
import { constants as fsc, existsSync, mkdirSync, openSync, renameSync, rmSync, truncateSync } from 'node:fs';
import Database from 'better-sqlite3';
import path from 'node:path';
import type { MultipartStorage, StorageDriver } from '../storage/driver.js';
import type { PoweredStorage } from '../storage/power.js';
import { RWRESULT, StorageError } from '../storage/rwresult.js';
import { silentLogger, type Logger } from '../log.js';
import { CachedFile, type FileAttrs, type FileContext, type FileRecord, type UploadOutcome } from './cached-file.js';
import { initChecksums } from './checksum.js';
import { ENUM_MODE, FLUSH, FLUSH_MODE, FLUSH_RESULT, OWN_TAG, PURGE, type FlushAction, type PurgeAction, type FlushMode, type FlushResult } from './constants.js';
import { openDatabase, type Db } from './db.js';
import { Checkpointer, type CheckpointerOptions } from './checkpointer.js';
import { VaultError } from './errors.js';
import { Evictor } from './eviction.js';
import { ConflictResolver, type Conflict, type ConflictPolicy } from './conflicts.js';
import { ListingStore } from './listings.js';
import { fileStatuses, matchesEnumMode, type FileStatus } from './status.js';
import { takeLock } from './lock.js';
import { DataFile } from './data-file.js';
import { DataFilePool } from './data-file-pool.js';
import { accessClock, VaultStatements } from './statements.js';
import { transferHandlers, type TransferHandlers } from './transfer.js';
import { WriteBack, type QueueEntry } from './writeback.js';
import { DeleteQueue } from './delete-queue.js';
import { checkTag, checkTagCount } from './tags.js';
import { StreamBudget } from './stream-upload.js';
import { PendingSums, type SumSource } from './pending-sums.js';
import { DiskReserve } from './disk-reserve.js';

const MiB = 1024 * 1024;
/** Errors opening a data file that no retry fixes (a full descriptor table, EMFILE, is not one of them). */
const LASTING_OPEN_ERRORS = new Set(['ENOENT', 'EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EISDIR']);

export interface VaultOptions {
  dir: string;
  /** The WAL checkpoint thread's pace and WAL bound (tests). */
  checkpoints?: CheckpointerOptions;
  /** External storage: ReadData/WriteData come from it unless `transfer` is given. */
  storage: StorageDriver;
  transfer?: TransferHandlers;
  /** FLUSH_DELAYED on close waits this long before uploading (FlushAfterCloseDelay). */
  flushAfterCloseMs?: number;
  /** While changed files keep closing, uploads wait for a pause, but none longer than this after its close. */
  flushMaxDelayMs?: number;
  /** How long a journaled delete waits for others to join its batch (default: 200 ms, at most the flush delay). */
  deleteDelayMs?: number;
  /** Files uploaded at once by the write-back queue. */
  uploadConcurrency?: number;
  /** Retry delays of transient upload failures: doubled per attempt from base up to max, with jitter. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** When the object changed in storage since the cached copy was taken (FILE_MODIFIED_EXTERNALLY). */
  conflictPolicy?: ConflictPolicy;
  /** Bytes of closed, changed files waiting for upload past which writers wait (back-pressure). */
  dirtyBudget?: number;
  /** PURGE_DELAYED on close waits this long before dropping clean blocks (PurgeAfterCloseDelay). */
  purgeAfterCloseMs?: number;
  /** Block size for new vaults (ReadBlockSize/WriteBlockSize); an existing vault keeps its own. */
  blockSize?: number;
  fetchBlocks?: number;
  readAheadBlocks?: number;
  /** Bytes of cached data the vault may hold (UserModeFileCacheSize, default 300 MB); dirty and pinned data may exceed it. */
  sizeLimit?: number;
  objectMeta?: FileContext['objectMeta'];
  /**
   * Stream uploads: given, the parts of large files written from their start go to storage while they are
   * written (storage permitting: it needs multipart uploads). The metadata such an upload starts with: the
   * object's, less anything the owner cannot know until the last write (the mtime).
   */
  streamMeta?: NonNullable<FileContext['stream']>['meta'];
  /**
   * A file the owner created where storage had no object is uploaded without first asking storage again
   * (HEAD) while this young: the owner's knowledge of that absence is trusted for as long as its metadata
   * lifetime. 0 (default): always ask.
   */
  absentTrustMs?: number;
  /** A read-only mount: nothing is uploaded (changes left by an earlier mount stay in the vault for a later one). */
  readOnly?: boolean;
  log?: Logger;
}

/** The remote object a cached file is based on, as the owner last saw it (HEAD or listing). */
export interface RemoteVersion {
  etag: string;
  size: number;
}

export type { FileStatus } from './status.js';

/** How long a journaled delete waits for others to join its batch (at most the flush delay). */
const DELETE_DELAY_MS = 200;
/** Stream uploads: parts in flight at once, all files together (each holds a part-sized buffer). */
const STREAM_PARTS_IN_FLIGHT = 4;
/** Stream uploads: how often open files are looked at for parts their writers have moved past. */
const STREAM_TICK_MS = 200;

export const DEFAULT_SIZE_LIMIT = 314_572_800;

export type { Conflict, ConflictPolicy } from './conflicts.js';

export interface CloseActions {
  flush?: FlushAction;
  purge?: PurgeAction;
}

export class Vault {
  private readonly open = new Map<string, CachedFile>();
  private readonly opening = new Map<string, Promise<CachedFile>>();
  private readonly closing = new Map<string, Promise<void>>();
  private readonly evictor: Evictor;
  private readonly purgeTimers = new Map<string, NodeJS.Timeout>();
  /** Files closed without changes, and when: their use times, written for LRU every few seconds. */
  private readonly touched = new Map<number, number>();
  private touchTimer: NodeJS.Timeout | undefined;
  private reserve: DiskReserve | undefined;
  private checkpointer: Checkpointer | undefined;
  private streamTimer: NodeJS.Timeout | undefined;
  /** Removed files still open: where their data files were moved (removeRecord), until their last close. */
  private readonly removedData = new Map<CachedFile, string>();
  private removedSeq = 0;
  private purgeAfterCloseMs = 60_000;
  private resolver!: ConflictResolver;
  private dirtyBudget = DEFAULT_SIZE_LIMIT / 2;
  private writeback!: WriteBack;
  /** Called when the write-back queue uploaded a file, so the owner can update what it caches of it. */
  onUploaded: (rec: FileRecord) => void = () => undefined;
  private closed = false;
  /** Directory listings kept in the vault (for the owner's namespace). */
  readonly listings: ListingStore;
  /** Empty data files made ahead for the next new records (off the main thread). */
  private readonly spares: DataFilePool;
  private deletes!: DeleteQueue;

  private constructor(
    readonly dir: string,
    readonly storage: StorageDriver,
    private readonly db: Db,
    private readonly statements: VaultStatements,
    private readonly ctx: FileContext,
    private readonly lockFile: string,
    sizeLimit: number,
    /** Files with unflushed data found at open (orphans of an earlier run, R45). */
    readonly orphans: FileRecord[],
  ) {
    this.evictor = new Evictor({
      statements,
      blockSize: ctx.blockSize,
      limitBytes: sizeLimit,
      usedBytes: statements.presentBytes(ctx.blockSize),
      openFiles: () => this.open.values(),
      isBusy: (key) => this.open.has(key) || this.opening.has(key) || this.closing.has(key),
      dropData: (id) => truncateSync(this.dataPath(id), 0),
      beforeEvict: () => this.saveTouched(),
      log: ctx.log,
    });
    ctx.accountBytes = (delta) => this.evictor.account(delta);
    ctx.pendingSums = new PendingSums({ blockSize: ctx.blockSize, source: (id) => this.sumSource(id), save: (id, sums) => statements.setSums(id, sums) });
    this.listings = new ListingStore(db);
    this.spares = new DataFilePool(path.join(dir, 'data'), (id) => statements.isKnown(id));
  }

  /**
   * Where PendingSums finds a file's blocks: the open file's descriptor and states (not while it closes, or
   * while the kernel may be writing it through passthrough), else the data file of the closed file as stored.
   */
  private sumSource(id: number): SumSource | 'later' | undefined {
    for (const f of this.open.values()) {
      if (f.rec.id !== id) continue;
      if (f.closing || f.passthroughWriters > 0) return 'later';
      return { fd: f.dataFd, size: f.rec.size, wants: (b) => f.isSettledClean(b), owned: false };
    }
    const size = this.statements.sizeOf(id);
    if (size === undefined) return undefined;
    let fd: number;
    try {
      fd = openSync(this.dataPath(id), 'r');
    } catch {
      return undefined;
    }
    return { fd, size, wants: (b) => this.statements.isUnsummed(id, b), owned: true };
  }

  static async open(options: VaultOptions): Promise<Vault> {
    await initChecksums();
    const dir = path.resolve(options.dir);
    const log = options.log ?? silentLogger;
    try {
      mkdirSync(path.join(dir, 'data'), { recursive: true });
    } catch (err) {
      throw new VaultError('IO', `cannot create vault directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const lockFile = takeLock(dir);
    let db: Db | undefined;
    try {
      db = openDatabase(path.join(dir, 'vault.db'));
      const statements = new VaultStatements(db);
      const stored = statements.getInfo('block_size');
      const blockSize = stored ? Number(stored) : (options.blockSize ?? MiB);
      if (!stored) statements.setInfo('block_size', String(blockSize));
      if (statements.getInfo('clean_shutdown') === '0') {
        const dropped = statements.dropCleanBlocks();
        // Listings may lag behind the records they should show (an upload committed, its listing entry not): drop them.
        new ListingStore(db).clear();
        log.warn({ vault: dir, droppedCleanBlocks: dropped }, 'vault was not closed cleanly: recovered (clean blocks will be refetched, listings taken again)');
      }
      statements.setInfo('clean_shutdown', '0');
      // A sequential reader keeps up to this much in flight ahead of it: never more than a quarter of the vault (four
      // readers at full speed fit). An eighth held the default 300 MB vault to 37 blocks, two 16-block GETs in
      // flight: a cold 1 GiB read took 3.7-3.9 s on s3rver, against 3.2-3.4 s with four.
      const readAheadBlocks = Math.min(options.readAheadBlocks ?? 256, Math.max(1, Math.floor((options.sizeLimit ?? DEFAULT_SIZE_LIMIT) / blockSize / 4)));
      const ctx: FileContext = {
        transfer: options.transfer ?? transferHandlers(options.storage),
        statements,
        blockSize,
        // By default ranges of up to 64 blocks, four to a window: a small vault's window (75 blocks for the default
        // 300 MB) still has four GETs in flight, not one.
        fetchBlocks: options.fetchBlocks ?? Math.min(64, Math.max(1, Math.floor(readAheadBlocks / 4))),
        readAheadBlocks,
        objectMeta: options.objectMeta ?? (() => ({ meta: {} })),
        accountBytes: () => undefined,
        waitForRoom: async () => undefined,
        // Uploads a crash interrupted: what storage kept of them is ours, not another writer's.
        failedAttempts: new Map(statements.tagEverywhere(OWN_TAG.ATTEMPT).map((t) => [t.fileId, Number(t.value.toString())])),
        absentAt: new Map(),
        absentTrustMs: options.absentTrustMs ?? 0,
        log,
      };
      const multipart = ctx.transfer.multipart;
      if (options.streamMeta && multipart && !options.readOnly) {
        ctx.stream = { ops: multipart, budget: new StreamBudget(multipart.partSize, STREAM_PARTS_IN_FLIGHT), meta: options.streamMeta, active: new Map() };
      }
      const orphans = statements.dirtyFiles().filter((r) => !r.local);
      const vault = new Vault(dir, options.storage, db, statements, ctx, lockFile, options.sizeLimit ?? DEFAULT_SIZE_LIMIT, orphans);
      vault.purgeAfterCloseMs = options.purgeAfterCloseMs ?? vault.purgeAfterCloseMs;
      vault.resolver = new ConflictResolver(options.conflictPolicy ?? 'keep-both', vault, log);
      vault.dirtyBudget = options.dirtyBudget ?? Math.max(64 * MiB, (options.sizeLimit ?? DEFAULT_SIZE_LIMIT) / 2);
      vault.startWriteBack(options);
      vault.checkpointer = Checkpointer.start(db, path.join(dir, 'vault.db'), log, options.checkpoints);
      vault.touchTimer = setInterval(() => vault.saveTouched(), 10_000);
      vault.touchTimer.unref();
      if (!options.readOnly) {
        const reserve = (vault.reserve = new DiskReserve({ dir, log, evict: (bytes) => vault.evictor.evictBytes(bytes) }).start());
        statements.onFull = () => reserve.release();
      }
      if (ctx.stream) vault.startStreams(ctx.stream.ops);
      return vault;
    } catch (err) {
      db?.close();
      rmSync(lockFile, { force: true });
      throw err;
    }
  }

  /** Facts about the vault its owner keeps (e.g. which storage it caches). */
  setInfo(name: string, value: string): void {
    this.statements.setInfo(`owner.${name}`, value);
  }

  /** Read one such fact from a vault directory without opening it (false if there is no readable vault). */
  static peekInfo(dir: string, name: string): string | undefined {
    const file = path.join(dir, 'vault.db');
    if (!existsSync(file)) return undefined;
    try {
      const db = new Database(file, { readonly: true, fileMustExist: true });
      try {
        return (db.prepare('SELECT value FROM vault_info WHERE name = ?').get(`owner.${name}`) as { value: string } | undefined)?.value;
      } finally {
        db.close();
      }
    } catch {
      return undefined;
    }
  }

  get blockSize(): number {
    return this.ctx.blockSize;
  }

  /** Bytes of block data the vault holds (present blocks × block size: an upper bound of its disk use). */
  get usedBytes(): number {
    return this.evictor.usedBytes;
  }

  private dataPath(id: number): string {
    return path.join(this.dir, 'data', String(id));
  }

  /** The record of a key: the open file's live one, else the stored one. */
  record(key: string): FileRecord | undefined {
    const f = this.open.get(key);
    return f ? this.live(f) : this.statements.find(key);
  }

  /** An open file's record, including what the kernel wrote to its data file through passthrough handles. */
  private live(f: CachedFile): FileRecord {
    if (f.passthroughWriters > 0) f.adoptExternalWrites();
    return f.rec;
  }

  /** The live record of a file open now, if it is (cheap when nothing is open: a listing asks per entry). */
  openRecord(key: string): FileRecord | undefined {
    if (this.open.size === 0) return undefined;
    const f = this.open.get(key);
    return f && !f.unlinked ? this.live(f) : undefined;
  }

  isOpen(key: string): boolean {
    return this.open.has(key);
  }

  /**
   * Open (and create if needed) the cached file for `key`. `base` is the remote object as last seen, or null
   * if there is none; a clean cached copy of another version is dropped so stale blocks are never served.
   * Concurrent opens of one key share one CachedFile.
   */
  async openFile(key: string, base: RemoteVersion | null, attrs: FileAttrs, options: { local?: boolean } = {}): Promise<CachedFile> {
    for (;;) {
      const closing = this.closing.get(key);
      if (closing) {
        await closing;
        continue;
      }
      const pending = this.opening.get(key);
      if (pending) {
        const f = await pending;
        f.openCount++;
        return f;
      }
      const already = this.open.get(key);
      if (already) {
        already.openCount++;
        return already;
      }
      break;
    }
    // Opened again: a delayed purge from its last close is no longer wanted.
    clearTimeout(this.purgeTimers.get(key));
    this.purgeTimers.delete(key);
    const p = this.load(key, base, attrs, options.local ?? false);
    this.opening.set(key, p);
    try {
      return await p;
    } finally {
      this.opening.delete(key);
    }
  }

  private async load(key: string, base: RemoteVersion | null, attrs: FileAttrs, local: boolean): Promise<CachedFile> {
    let rec = this.statements.find(key);
    if (rec && !rec.dirty && !rec.local && (rec.remoteEtag ?? null) !== (base?.etag ?? null)) {
      this.ctx.log.debug({ key, cached: rec.remoteEtag, remote: base?.etag }, 'remote object changed: dropping cached blocks');
      this.evictor.account(-this.statements.presentBytes(this.ctx.blockSize, rec.id));
      this.statements.dropAllBlocks(rec.id);
      // Synchronous, as the rest of the load: a rename served during an await here could move the record, which
      // this load would then save back under the old name.
      try {
        truncateSync(this.dataPath(rec.id), 0);
      } catch {
        // no data file yet: nothing to drop
      }
      rec = { ...rec, ...attrs, size: base?.size ?? 0, fetchLimit: base?.size ?? 0, remoteEtag: base?.etag ?? null, dirty: base === null, dataDirty: base === null };
      this.statements.saveFile(rec);
      if (base === null && !this.offline) this.ctx.absentAt.set(key, Date.now());
    } else if (rec?.dirty && base && rec.remoteEtag !== base.etag) {
      this.ctx.log.warn({ key, cached: rec.remoteEtag, remote: base.etag }, 'object changed remotely while local changes are pending: the local version will replace it');
    }
    // Offline, the owner's "absent" is a guess (it could not ask): such a file's upload always asks.
    if (!rec && base === null && !this.offline && !local) this.ctx.absentAt.set(key, Date.now());
    const created = !rec;
    rec ??= this.statements.insert({
      key,
      ...attrs,
      size: base?.size ?? 0,
      fetchLimit: base?.size ?? 0,
      remoteEtag: base?.etag ?? null,
      dirty: base === null,
      dataDirty: base === null,
      pinned: false,
      local,
      lastError: 0,
    });
    if (base?.etag && this.statements.getTag(rec.id, OWN_TAG.ETAG)?.toString() !== base.etag) this.statements.putTag(rec.id, OWN_TAG.ETAG, Buffer.from(base.etag));
    let fd;
    try {
      // A new record starts from an empty data file, whatever a crash left under its id.
      const spare = created ? this.spares.take(rec.id) : undefined;
      fd = spare !== undefined ? DataFile.adopt(spare) : DataFile.open(this.dataPath(rec.id), fsc.O_RDWR | fsc.O_CREAT | (created ? fsc.O_TRUNC : 0), 0o600);
    } catch (err) {
      throw new VaultError('IO', `cannot open vault data file for ${JSON.stringify(key)}: ${(err as Error).message}`, { cause: err });
    }
    const states = this.statements.loadStates(rec.id, Math.ceil(rec.size / this.ctx.blockSize));
    const file = new CachedFile(this.ctx, rec, states, fd);
    file.openCount = 1;
    this.open.set(key, file);
    return file;
  }

  /**
   * Release one handle of the file; the last one closes its data file. Flush and purge actions (R49):
   * IMMEDIATE acts before returning, DELAYED after FlushAfterCloseDelay / PurgeAfterCloseDelay (cancelled if the
   * file is opened again), NONE (the default) leaves it to the owner.
   */
  async closeFile(file: CachedFile, actions: CloseActions = {}): Promise<void> {
    if (--file.openCount > 0) return;
    const flush = actions.flush ?? FLUSH.NONE;
    const purge = actions.purge ?? PURGE.NONE;
    let flushError: unknown;
    if (flush === FLUSH.IMMEDIATE) {
      await this.uploadFile(file).catch((err: unknown) => (flushError = err));
      if (file.openCount > 0) {
        // Opened again while it uploaded: the new handle owns it now.
        if (flushError) throw flushError;
        return;
      }
    }
    const key = file.key;
    file.closing = true;
    const done = (async () => {
      await file.closeData();
      if (file.unlinked) {
        rmSync(this.removedData.get(file) ?? this.dataPath(file.rec.id), { force: true });
        this.removedData.delete(file);
        this.evictor.account(-file.heldBytes());
      } else if (file.uncommitted) this.statements.saveFile(file.rec);
      // Only its use time changed: recorded in batches, not one synced transaction per close.
      else this.touched.set(file.rec.id, accessClock());
    })();
    this.closing.set(key, done);
    try {
      await done;
    } finally {
      // Under its name now: a rename may have moved it while it closed (see renameFile).
      for (const k of [key, file.key]) if (this.closing.get(k) === done) this.closing.delete(k);
      if (this.open.get(file.key) === file) this.open.delete(file.key);
    }
    // The actions follow the file to its name now (the old one may be another file's already).
    const now = file.key;
    if (flush === FLUSH.DELAYED && file.dirty && !file.unlinked && !file.rec.local) this.writeback.schedule(now, file.size);
    if (purge === PURGE.IMMEDIATE) this.purge(now);
    else if (purge === PURGE.DELAYED) this.later(this.purgeTimers, now, this.purgeAfterCloseMs, () => this.purge(now));
    this.evictor.maybeEvict();
    if (flushError) throw flushError;
  }

  /**
   * Stream uploads: every STREAM_TICK_MS each open file sends the parts its writer has moved past. First, the
   * multipart uploads a crash left behind (journaled ids) are aborted, in the background.
   */
  private startStreams(ops: MultipartStorage): void {
    const left = this.statements.tagEverywhere(OWN_TAG.STREAM);
    (async () => {
      for (const t of left) {
        try {
          const { key, uploadId } = JSON.parse(t.value.toString()) as { key: string; uploadId: string };
          await ops.abort(key, uploadId);
          this.ctx.log.info({ key, uploadId }, 'stream upload left by an unclean stop: aborted');
        } catch (err) {
          this.ctx.log.warn({ err: (err as Error).message }, 'stream upload left by an unclean stop: abort failed (storage expires it)');
          if (err instanceof StorageError && err.transient) continue; // offline: the next start tries again
        }
        if (!this.closed) this.statements.deleteTag(t.fileId, OWN_TAG.STREAM);
      }
    })().catch((err: unknown) => this.ctx.log.warn({ err: (err as Error).message }, 'stream uploads left by an unclean stop: cleanup failed'));
    this.streamTimer = setInterval(() => {
      for (const f of this.open.values()) {
        try {
          f.pumpStream();
        } catch (err) {
          this.ctx.log.warn({ key: f.key, err: (err as Error).message }, 'stream upload: could not look at the data file');
        }
      }
    }, STREAM_TICK_MS);
    this.streamTimer.unref();
  }

  /** Access times, for eviction's order only: a failed commit (the disk full) keeps them for the next try. */
  private saveTouched(): void {
    if (!this.touched.size) return;
    try {
      this.statements.touch(this.touched);
      this.touched.clear();
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message }, 'saving access times failed; will try again');
    }
  }

  private later(timers: Map<string, NodeJS.Timeout>, key: string, ms: number, fn: () => void): void {
    clearTimeout(timers.get(key));
    const t = setTimeout(() => {
      timers.delete(key);
      if (!this.closed && !this.open.has(key)) fn();
    }, ms);
    t.unref();
    timers.set(key, t);
  }

  /** Drop the cached blocks of a closed file without changes (purge); changed or pinned files keep theirs. */
  purge(key: string): boolean {
    const rec = this.statements.find(key);
    if (!rec || rec.dirty || rec.pinned || this.open.has(key) || this.opening.has(key) || this.closing.has(key)) return false;
    const bytes = this.statements.presentBytes(this.ctx.blockSize, rec.id);
    this.statements.dropAllBlocks(rec.id);
    truncateSync(this.dataPath(rec.id), 0);
    this.evictor.account(-bytes);
    return true;
  }

  /** Records under a key prefix, live ones of open files first (for listings of not-yet-uploaded files). */
  recordsUnder(prefix: string): FileRecord[] {
    return this.collectUnder(prefix, this.statements.underPrefix(prefix));
  }

  /**
   * The records under a prefix that storage does not show as they are: open, changed, or never uploaded (new,
   * local). What a listing must add to what storage lists — without loading every cached file's record.
   */
  pendingUnder(prefix: string): FileRecord[] {
    return this.collectUnder(prefix, this.statements.pendingUnder(prefix));
  }

  private collectUnder(prefix: string, stored: FileRecord[]): FileRecord[] {
    const out = new Map<string, FileRecord>();
    for (const [key, f] of this.open) if (key.startsWith(prefix) && !f.unlinked) out.set(key, this.live(f));
    for (const r of stored) if (!out.has(r.key)) out.set(r.key, r);
    return [...out.values()];
  }

  /** Move a file's record to another key (after the objects were moved); a record at the target is replaced. */
  renameFile(fromKey: string, toKey: string): void {
    // Whether storage has an object at the new name is not known here: its upload asks.
    this.ctx.absentAt.delete(fromKey);
    this.ctx.absentAt.delete(toKey);
    if (fromKey === toKey) return;
    const file = this.open.get(fromKey);
    const rec = file?.rec ?? this.statements.find(fromKey);
    if (!rec) {
      // Nothing to move (a file never opened, or one a directory move already took there): a record at the target
      // is dropped only if it is a clean copy of what that name held before. A changed or open one is the moved
      // file itself, changed since (a directory move finished again after a crash): dropped, its changes were lost.
      const there = this.open.get(toKey)?.rec ?? this.statements.find(toKey);
      if (there && !there.dirty && !this.open.has(toKey)) this.removeRecord(toKey);
      return;
    }
    this.removeRecord(toKey);
    this.writeback.move(fromKey, toKey);
    rec.key = toKey;
    this.statements.saveFile(rec);
    if (file) {
      this.open.delete(fromKey);
      this.open.set(toKey, file);
    }
    // A file closing moves with its close: an open of the new name waits for it, and the close's end clears the
    // new name's entry (left behind, a later open of it got the closed file: its descriptor gone, or another's).
    const closing = this.closing.get(fromKey);
    if (closing) {
      this.closing.delete(fromKey);
      this.closing.set(toKey, closing);
    }
  }

  /**
   * Forget a key's cached file; an open one lives on for its handles and is never uploaded. `deleteObject`:
   * journal the delete of its object in the same commit (sent later, batched; see DeleteQueue).
   */
  removeRecord(key: string, options: { deleteObject?: boolean } = {}): void {
    if (options.deleteObject) {
      this.db.transaction(() => {
        this.removeRecord(key);
        this.deleteObject(key);
      })();
      return;
    }
    this.writeback.drop(key);
    this.ctx.absentAt.delete(key);
    const file = this.open.get(key);
    const rec = file?.rec ?? this.statements.find(key);
    if (!rec) return;
    const bytes = this.statements.presentBytes(this.ctx.blockSize, rec.id);
    this.statements.deleteFile(rec.id);
    if (file) {
      file.unlinked = true;
      this.open.delete(key);
      file.abortStream().catch((err: unknown) => this.ctx.log.warn({ key, err: (err as Error).message }, 'stream upload: abort of a removed file failed'));
      // Its handles keep the data file open; its name goes now, so a new record that gets the same id (SQLite
      // reuses the largest) never opens it, and removing it at the last close never removes the new one's.
      const gone = `${this.dataPath(rec.id)}.removed-${process.pid}-${++this.removedSeq}`;
      try {
        renameSync(this.dataPath(rec.id), gone);
        this.removedData.set(file, gone);
      } catch (err) {
        this.ctx.log.warn({ key, err: (err as Error).message }, 'could not move a removed file\'s data aside');
      }
    } else {
      rmSync(this.dataPath(rec.id), { force: true });
      this.evictor.account(-bytes);
    }
  }

  /**
   * An upload of the file was sent and its outcome never learned (its answer lost): storage may hold it under the
   * name it was sent to, until the retry tells.
   */
  uploadOutcomeUnknown(key: string): boolean {
    const rec = this.record(key);
    return rec !== undefined && this.ctx.failedAttempts.has(rec.id);
  }

  /** Every byte of the file is in the vault: nothing of it is left to fetch from storage. */
  holdsWhole(key: string): boolean {
    const open = this.open.get(key);
    if (open) return open.holdsWhole();
    const rec = this.statements.find(key);
    if (!rec) return false;
    const needed = Math.ceil(Math.min(rec.size, rec.fetchLimit) / this.ctx.blockSize);
    return this.statements.blocksBelow(rec.id, needed) === needed;
  }

  /** The object was replaced by our own hand with the same bytes (metadata copy-in-place): keep the blocks. */
  rebase(key: string, etag: string, attrs: Partial<FileAttrs>, copiedEtag?: string): void {
    const rec = this.open.get(key)?.rec ?? this.statements.find(key);
    // A record changed meanwhile keeps its base, unless that is the version just copied (`copiedEtag`).
    if (!rec || (rec.dirty && (copiedEtag === undefined || rec.remoteEtag !== copiedEtag))) return;
    Object.assign(rec, attrs, { remoteEtag: etag });
    this.statements.saveFile(rec);
  }

  /**
   * Its object was copied to this key (a directory move): a record based on the source's version is now based on
   * the copy, changed or not, so its next upload or open checks against what the new name holds.
   */
  rebaseMoved(key: string, fromEtag: string, toEtag: string): void {
    const rec = this.open.get(key)?.rec ?? this.statements.find(key);
    if (!rec || rec.remoteEtag !== fromEtag || fromEtag === toEtag) return;
    rec.remoteEtag = toEtag;
    this.statements.saveFile(rec);
  }

  /** Uploads of keys under `prefix` wait until the returned function is called; see WriteBack.hold. */
  holdUploads(prefix: string): () => void {
    return this.writeback.hold(prefix);
  }

  uploadsSettledUnder(prefix: string): Promise<void> {
    return this.writeback.settledUnder(prefix);
  }

  /**
   * A changed file's object went away by our own hand (its name moved): the cached copy becomes a new file,
   * uploaded whole by its pending upload, with nothing in storage to check against.
   */
  detachRemote(key: string): void {
    const rec = this.record(key);
    if (!rec) return;
    rec.remoteEtag = null;
    rec.dirty = true;
    rec.dataDirty = true;
    this.statements.saveFile(rec);
  }

  /**
   * Move records the vault holds whole to new keys without storage (a directory moved offline), in one commit: each
   * becomes a changed file at its new key, uploaded whole once storage is back, and the delete of the object it had
   * (or may have, an upload's answer lost) is journaled. `gone`: more keys whose objects go (directory markers the
   * vault has no record of). A crash leaves all of it done or none.
   */
  moveHeld(moves: { from: string; to: string }[], gone: string[]): void {
    for (const m of moves) if (!this.holdsWhole(m.from)) throw new VaultError('NOT_FOUND', `move ${JSON.stringify(m.from)}: not all of it is in the vault`);
    this.db.transaction(() => {
      for (const { from, to } of moves) {
        const rec = this.record(from);
        if (!rec) continue;
        const hadObject = rec.remoteEtag !== null || this.uploadOutcomeUnknown(from);
        this.renameFile(from, to);
        if (hadObject) this.deleteObject(from);
        if (!rec.local) this.detachRemote(to);
      }
      for (const key of gone) this.deleteObject(key);
    })();
    for (const { to } of moves) if (!this.isOpen(to)) this.scheduleUpload(to);
  }

  /** Storage is offline (the power wrapper's last word): uploads and deletes wait for it. */
  get isOffline(): boolean {
    return this.offline;
  }

  /**
   * `work`'s outcome, or `undefined` as soon as storage is (or goes) offline: work that would wait for storage (an
   * upload asked for) is left to go on by itself.
   */
  async unlessOffline<T>(work: Promise<T>): Promise<T | undefined> {
    if (this.offline) {
      work.catch(() => undefined);
      return undefined;
    }
    const { offline, cancel } = this.whenOffline();
    work.catch(() => undefined); // if offline wins the race, its failure is nobody's to handle
    try {
      return await Promise.race([work, offline.then(() => undefined)]);
    } finally {
      cancel();
    }
  }

  /**
   * Make a file local (R44: only in the vault, never uploaded; its data must all be present) or ordinary
   * again (it then counts as changed and is uploaded by the next flush).
   */
  setLocal(key: string, local: boolean): void {
    const rec = this.record(key);
    if (!rec || rec.local === local) return;
    rec.local = local;
    rec.dirty = true;
    rec.dataDirty = true;
    if (local) {
      rec.remoteEtag = null;
      rec.fetchLimit = 0;
    }
    this.statements.saveFile(rec);
  }

  // ---- the rename journal (directory renames finish after a crash) ----

  beginRename(fromPrefix: string, toPrefix: string): number {
    return Number(this.db.prepare('INSERT INTO renames (from_prefix, to_prefix, started_ms) VALUES (?, ?, ?)').run(fromPrefix, toPrefix, Date.now()).lastInsertRowid);
  }

  endRename(id: number): void {
    this.db.prepare('DELETE FROM renames WHERE id = ?').run(id);
  }

  pendingRenames(): { id: number; fromPrefix: string; toPrefix: string }[] {
    return this.db.prepare('SELECT id, from_prefix AS fromPrefix, to_prefix AS toPrefix FROM renames ORDER BY id').all() as { id: number; fromPrefix: string; toPrefix: string }[];
  }

  // ---- journaled deletes (unlink; sent later, batched) ----

  /**
   * Journal the delete of a key's object (its record, if any, stays: a file written there later is uploaded after
   * the delete has gone). Sent batched by the delete queue.
   */
  deleteObject(key: string): void {
    this.deletes.add(key);
  }

  /** Is the key's object to be deleted (journaled, not yet confirmed by storage)? */
  deletePending(key: string): boolean {
    return this.deletes.has(key);
  }

  /** The keys under a prefix whose deletes are journaled and not yet confirmed. */
  deletesUnder(prefix: string): string[] {
    return this.deletes.under(prefix);
  }

  /** Deletes journaled and not yet confirmed. */
  get pendingDeletes(): number {
    return this.deletes.size;
  }

  /**
   * Send journaled deletes now and wait: all of them, or (with a key) until that key's has reached storage — before
   * anything writes the key, so the late delete cannot remove what is written. Storage's failure is thrown.
   */
  sendDeletes(key?: string): Promise<void> {
    return key === undefined ? this.deletes.flush() : this.deletes.settle(key);
  }

  // ---- pinning (never evicted, kept for offline use) ----

  setPinned(key: string, pinned: boolean): boolean {
    const rec = this.record(key);
    if (!rec) return false;
    rec.pinned = pinned;
    this.statements.setPinned(rec.id, pinned);
    if (!pinned) this.evictor.maybeEvict();
    return true;
  }

  // ---- tags (R43) ----

  private recordFor(key: string, op: string): FileRecord {
    const rec = this.record(key);
    if (!rec) throw new VaultError('NOT_FOUND', `${op}: ${JSON.stringify(key)} has no record in the vault`);
    return rec;
  }

  setTag(key: string, tagId: number, value: Buffer): void {
    checkTag(tagId, value);
    const rec = this.recordFor(key, 'set tag');
    if (this.statements.getTag(rec.id, tagId) === undefined) checkTagCount(this.statements.tagsOf(rec.id).length + 1);
    this.statements.putTag(rec.id, tagId, value);
  }

  getTag(key: string, tagId: number): Buffer | undefined {
    checkTag(tagId);
    const rec = this.record(key);
    return rec && this.statements.getTag(rec.id, tagId);
  }

  deleteTag(key: string, tagId: number): boolean {
    checkTag(tagId);
    const rec = this.record(key);
    return rec ? this.statements.deleteTag(rec.id, tagId) : false;
  }

  listTags(key: string): { id: number; value: Buffer }[] {
    const rec = this.record(key);
    // The upload-attempt stamp is bookkeeping that comes and goes with every upload: not shown.
    return rec ? this.statements.tagsOf(rec.id).filter((t) => t.id !== OWN_TAG.ATTEMPT) : [];
  }

  // ---- status, enumeration, flush (CBCache API) ----

  /** Per-file status of every cached file (or those under a key prefix). */
  status(prefix = ''): FileStatus[] {
    return fileStatuses(this.open.values(), this.statements, this.ctx.blockSize, prefix);
  }

  /** EnumerateCachedFiles: keys matching the ENUM_MODE flags (0 = all; several flags = any of them). */
  enumerateCachedFiles(mode: number): string[] {
    return this.status()
      .filter((s) => matchesEnumMode(s, mode))
      .map((s) => s.key);
  }

  /** Flush one file: TEST reports, SYNC uploads and waits, ASYNC queues the upload now and returns RUNNING. */
  async flushFile(key: string, mode: FlushMode = FLUSH_MODE.SYNC): Promise<FlushResult> {
    const rec = this.record(key);
    if (!rec || !rec.dirty || rec.local) return FLUSH_RESULT.NOTHING;
    if (mode === FLUSH_MODE.TEST) return this.writeback.isPending(key) ? FLUSH_RESULT.RUNNING : FLUSH_RESULT.DIRTY;
    if (mode === FLUSH_MODE.ASYNC) {
      this.writeback.schedule(key, rec.size, 0);
      return FLUSH_RESULT.RUNNING;
    }
    await this.writeback.flush(key, rec.size);
    return FLUSH_RESULT.SUCCESS;
  }

  /**
   * Upload every pending change now and wait (unmount, SIGTERM, CloseCache with FLUSH.IMMEDIATE). Stops waiting
   * if the storage goes offline: what is left stays in the vault as orphans for the next start.
   */
  async flushAll(onProgress?: (done: number, total: number, key: string) => void): Promise<{ uploaded: number; left: number }> {
    const keys = this.enumerateCachedFiles(ENUM_MODE.CHANGED);
    let done = 0;
    let left = 0;
    try {
      await this.deletes.flush();
    } catch (err) {
      this.ctx.log.error({ deletes: this.deletes.size, err: (err as Error).message }, 'deletes not sent; they stay journaled for the next start');
    }
    // All queued at once: the write-back queue runs as many as its concurrency and memory budget allow.
    const { offline, cancel } = this.whenOffline();
    await Promise.all(
      keys.map(async (key) => {
        if (this.offline) {
          left++;
          return;
        }
        try {
          const flushed = this.flushFile(key);
          flushed.catch(() => undefined); // if offline wins the race, its failure is nobody's to handle
          await Promise.race([flushed, offline]);
          if (this.offline) left++;
          else done++;
        } catch (err) {
          left++;
          this.ctx.log.error({ key, err: (err as Error).message }, 'flush failed; the file stays in the vault');
        }
        onProgress?.(done + left, keys.length, key);
      }),
    );
    cancel();
    return { uploaded: done, left };
  }

  private offline = false;
  private offlineWaiters: (() => void)[] = [];

  /**
   * Offline: ask storage now whether it is back (one request), rather than wait for the next probe (up to 15 s
   * away). The uploads resume if it is. Whether storage is online.
   */
  async checkOnline(): Promise<boolean> {
    if (!this.offline) return true;
    await this.storage.probe().catch(() => undefined);
    return !this.offline;
  }

  /** Resolves when storage goes offline; `cancel` withdraws the waiter once it is no longer needed. */
  private whenOffline(): { offline: Promise<void>; cancel: () => void } {
    let wake!: () => void;
    const offline = new Promise<void>((r) => (wake = r));
    this.offlineWaiters.push(wake);
    const cancel = (): void => {
      const at = this.offlineWaiters.indexOf(wake);
      if (at >= 0) this.offlineWaiters.splice(at, 1);
    };
    return { offline, cancel };
  }

  /** The write-back queue and everything that feeds it: orphans, power notifications, back-pressure. */
  private startWriteBack(options: VaultOptions): void {
    this.deletes = new DeleteQueue(this.db, this.storage, {
      // Short: there is no CPU to spare for, and another client should soon see the object gone.
      delayMs: options.deleteDelayMs ?? Math.min(DELETE_DELAY_MS, options.flushAfterCloseMs ?? 2000),
      retryBaseMs: options.retryBaseMs ?? 1000,
      retryMaxMs: options.retryMaxMs ?? 60_000,
      onDeleted: (keys) => this.deleted(keys),
      onRefused: (keys) => {
        // The objects are back in view: their directories are listed again.
        for (const k of keys) this.listings.drop(k.slice(0, k.lastIndexOf('/') + 1));
      },
      log: this.ctx.log,
    });
    this.writeback = new WriteBack({
      concurrency: options.uploadConcurrency ?? 32,
      delayMs: options.flushAfterCloseMs ?? 2000,
      maxDelayMs: options.flushMaxDelayMs ?? 30_000,
      // Past half the dirty budget, uploads go at once: writers would soon wait for room.
      deferBytes: () => this.dirtyBudget / 2,
      retryBaseMs: options.retryBaseMs ?? 1000,
      retryMaxMs: options.retryMaxMs ?? 60_000,
      upload: (key) => this.uploadKey(key),
      log: this.ctx.log,
    });
    this.ctx.waitForRoom = () => this.writeback.waitForRoom(this.dirtyBudget);
    const powered = this.storage as Partial<PoweredStorage>;
    powered.onPower?.((state, reason) => {
      this.offline = state === 'offline';
      if (this.offline) {
        this.ctx.log.warn({ reason: reason?.message }, 'storage offline: uploads paused, the vault keeps serving what it holds');
        this.writeback.pause();
        this.deletes.pause();
        for (const w of this.offlineWaiters.splice(0)) w();
      } else {
        this.ctx.log.info('storage back online: error states cleared, uploads resume');
        this.resetErrorState();
        this.writeback.resetErrors();
        this.writeback.resume();
        this.deletes.resume();
      }
    });
    if (powered.power === 'offline') {
      this.offline = true;
      this.writeback.pause();
      this.deletes.pause();
    }
    if (options.readOnly) {
      if (this.orphans.length) this.ctx.log.warn({ count: this.orphans.length }, 'read-only mount: changes an earlier mount left in the vault stay there, not uploaded');
      return;
    }
    for (const rec of this.orphans) this.writeback.schedule(rec.key, rec.size, 0);
    // Deletes an earlier run journaled and never sent.
    if (this.deletes.size) this.ctx.log.warn({ count: this.deletes.size }, 'sending deletes an earlier run left journaled');
    this.deletes.start();
  }

  /** The queue's upload of one file: open it, upload with the conflict policy, close it. */
  private async uploadKey(key: string): Promise<UploadOutcome | 'gone'> {
    let rec = this.record(key);
    if (!rec || !rec.dirty || rec.local) return 'gone';
    // A file made where an object was removed: the old object's delete goes first (it must not follow the upload).
    // A directory's marker, made where a file of its name was removed (offline: mkdir could not send that delete),
    // sends the file's delete first too: once the marker is uploaded, that pending delete would hide the directory.
    for (const gone of key.endsWith('/') ? [key, key.slice(0, -1)] : [key]) {
      if (!this.deletes.has(gone)) continue;
      await this.deletes.settle(gone);
      rec = this.record(key);
      if (!rec || !rec.dirty || rec.local) return 'gone';
    }
    let file: CachedFile;
    try {
      file = await this.openFile(key, rec.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null, rec);
    } catch (err) {
      // Its data file is gone or cannot be opened (deleted under the mount, no permission, read-only disk): no
      // retry will help, and retrying for ever kept an unmount waiting for ever. The file stops (FILE_FAILURE); its
      // record stays, and "s3vault reset-errors" tries again once the cause is fixed.
      const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code;
      if (err instanceof VaultError && code && LASTING_OPEN_ERRORS.has(code)) throw new StorageError(RWRESULT.FILE_FAILURE, 'upload', key, `${err.message} (its changes cannot be read from the vault)`, { cause: err });
      throw err;
    }
    try {
      const outcome = await this.uploadFile(file);
      if (outcome !== 'nothing' && !file.unlinked) this.onUploaded(file.rec);
      return outcome;
    } finally {
      await this.closeFile(file);
    }
  }

  /**
   * Deletes storage confirmed: their names leave the stored listings (a LIST in flight meanwhile may still have
   * them; its watch replays this), unless a new file took the name meanwhile.
   */
  private deleted(keys: string[]): void {
    for (const k of keys) {
      if (this.record(k)) continue;
      // A directory's marker (rmdir): the directory leaves its parent's listing, as a file does.
      const name = k.endsWith('/') ? k.slice(0, -1) : k;
      const cut = name.lastIndexOf('/') + 1;
      this.listings.setEntry(name.slice(0, cut), name.slice(cut), null);
    }
  }

  /** Upload a file now (WriteData), applying the conflict policy when the object changed in storage. */
  uploadFile(file: CachedFile): Promise<UploadOutcome> {
    return this.resolver.upload(file);
  }

  /** Conflicts met by uploads (status and the log tell the user). */
  get conflicts(): Conflict[] {
    return this.resolver.conflicts;
  }

  /** Told of each conflict, so the owner can drop what it caches of both names. */
  set onConflict(fn: (c: Conflict) => void) {
    this.resolver.onConflict = fn;
  }

  /** Queue a changed file's upload (after the delay, or now). */
  scheduleUpload(key: string, delayMs?: number): void {
    const rec = this.record(key);
    if (rec?.dirty && !rec.local) this.writeback.schedule(key, rec.size, delayMs);
  }

  /** Wait until the file has no upload in flight (before deleting or renaming its object). */
  settled(key: string): Promise<void> {
    return this.writeback.settled(key);
  }

  /** The write-back queue, for status. */
  queue(): QueueEntry[] {
    return this.writeback.entries();
  }

  /** ResetErrorState: clear the last transfer error of one file or of all; stopped uploads go again. */
  resetErrorState(key?: string): void {
    this.writeback?.resetErrors(key);
    for (const rec of key ? [this.record(key)].filter((r): r is FileRecord => !!r) : this.statements.allFiles()) {
      if (rec.lastError === 0) continue;
      const live = this.open.get(rec.key)?.rec ?? rec;
      live.lastError = 0;
      this.statements.saveFile(live);
    }
  }

  /** Evict now if over the limit (tests and `s3vault vault compact`). */
  evict(): void {
    this.evictor.evict();
  }

  /** Tests: let go of everything as a killed process would — nothing committed, the stop not marked clean. */
  async simulateCrash(): Promise<void> {
    this.closed = true;
    clearInterval(this.touchTimer);
    this.reserve?.stop();
    clearInterval(this.streamTimer);
    this.ctx.pendingSums?.stop();
    this.writeback.stop();
    this.deletes.stop();
    for (const f of this.open.values()) await f.closeData().catch(() => undefined);
    await this.checkpointer?.stop();
    this.db.close();
  }

  /**
   * CloseCache: open files are committed, the stop is recorded as clean, the lock released. FLUSH.IMMEDIATE
   * uploads every pending change first; DELAYED and NONE upload nothing (R49: a delayed flush at close is none).
   * `abandonUploads` (the process exits next: an unmount told not to wait): uploads under way are not waited
   * for, and their files stay open under them. Their attempts are journaled, so the next start treats them as
   * after a crash: whatever landed is recognised, the rest goes again.
   */
  async close(actions: CloseActions = {}, options: { abandonUploads?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    for (const t of this.purgeTimers.values()) clearTimeout(t);
    clearInterval(this.touchTimer);
    this.reserve?.stop();
    clearInterval(this.streamTimer);
    if (actions.flush === FLUSH.IMMEDIATE) await this.flushAll();
    this.writeback.stop();
    this.deletes.stop();
    await this.deletes.settled();
    // An upload under way holds its file open and reads its data file: closing that under it closed the
    // descriptor twice (EBADF at the upload's own close, or, had the number been reused, someone else's file).
    if (!options.abandonUploads) await this.writeback.allSettled();
    this.closed = true;
    await Promise.allSettled([...this.opening.values(), ...this.closing.values()]);
    for (const f of [...this.open.values()]) {
      if (options.abandonUploads && f.isUploading) continue;
      await f.commit().catch((err) => this.ctx.log.error({ key: f.key, err }, 'commit at close failed'));
      f.openCount = 1;
      await this.closeFile(f);
    }
    // Stream uploads no upload took (nothing flushed at this close): drop them now rather than at the next start.
    for (const stream of this.ctx.stream?.active.values() ?? []) await stream.abort();
    this.ctx.stream?.active.clear();
    // Every file is closed now: what was fetched but not yet summed is summed from its data file.
    this.ctx.pendingSums?.drain();
    this.ctx.pendingSums?.stop();
    this.saveTouched();
    this.statements.runBatch();
    this.listings.flush();
    await this.spares.stop();
    this.statements.setInfo('clean_shutdown', '1');
    await this.checkpointer?.stop();
    this.db.close();
    rmSync(this.lockFile, { force: true });
  }
}
