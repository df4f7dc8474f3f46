/**
 * The vault: a directory holding `vault.db` (SQLite, the journal) and `data/<id>` (one sparse data file per
 * cached file). It opens cached files by key, keeps their records, and on open recovers from an unclean
 * stop (clean blocks are forgotten and refetched; dirty blocks were made durable before their commit and
 * are kept — the orphans the owner flushes). It knows storage only through the StorageDriver interface.
 */
import { closeSync, constants as fsc, mkdirSync, openSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { open as openFile, truncate } from 'node:fs/promises';
import path from 'node:path';
import type { StorageDriver } from '../storage/driver.js';
import { silentLogger, type Logger } from '../log.js';
import { CachedFile, type FileAttrs, type FileContext, type FileRecord } from './cached-file.js';
import { openDatabase, type Db } from './db.js';
import { VaultError } from './errors.js';
import { VaultStatements } from './statements.js';

const MiB = 1024 * 1024;

export interface VaultOptions {
  dir: string;
  storage: StorageDriver;
  /** Block size for new vaults (ReadBlockSize/WriteBlockSize); an existing vault keeps its own. */
  blockSize?: number;
  fetchBlocks?: number;
  readAheadBlocks?: number;
  objectMeta?: FileContext['objectMeta'];
  log?: Logger;
}

/** The remote object a cached file is based on, as the owner last saw it (HEAD or listing). */
export interface RemoteVersion {
  etag: string;
  size: number;
}

export class Vault {
  private readonly open = new Map<string, CachedFile>();
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly storage: StorageDriver,
    private readonly db: Db,
    private readonly statements: VaultStatements,
    private readonly ctx: FileContext,
    private readonly lockFile: string,
    /** Files with unflushed data found at open (orphans of an earlier run). */
    readonly orphans: FileRecord[],
  ) {}

  static open(options: VaultOptions): Vault {
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
        log.warn({ vault: dir, droppedCleanBlocks: dropped }, 'vault was not closed cleanly: recovered (clean blocks will be refetched)');
      }
      statements.setInfo('clean_shutdown', '0');
      const ctx: FileContext = {
        storage: options.storage,
        statements,
        blockSize,
        fetchBlocks: options.fetchBlocks ?? 4,
        readAheadBlocks: options.readAheadBlocks ?? 16,
        objectMeta: options.objectMeta ?? (() => ({ meta: {} })),
        log,
      };
      return new Vault(dir, options.storage, db, statements, ctx, lockFile, statements.dirtyFiles());
    } catch (err) {
      db?.close();
      rmSync(lockFile, { force: true });
      throw err;
    }
  }

  get blockSize(): number {
    return this.ctx.blockSize;
  }

  private dataPath(id: number): string {
    return path.join(this.dir, 'data', String(id));
  }

  /** The record of a key: the open file's live one, else the stored one. */
  record(key: string): FileRecord | undefined {
    return this.open.get(key)?.rec ?? this.statements.find(key);
  }

  isOpen(key: string): boolean {
    return this.open.has(key);
  }

  /**
   * Open (and create if needed) the cached file for `key`. `base` is the remote object as last seen, or null
   * if there is none; a clean cached copy of another version is dropped so stale blocks are never served.
   */
  async openFile(key: string, base: RemoteVersion | null, attrs: FileAttrs): Promise<CachedFile> {
    const already = this.open.get(key);
    if (already) {
      already.openCount++;
      return already;
    }
    let rec = this.statements.find(key);
    if (rec && !rec.dirty && (rec.remoteEtag ?? null) !== (base?.etag ?? null)) {
      this.ctx.log.debug({ key, cached: rec.remoteEtag, remote: base?.etag }, 'remote object changed: dropping cached blocks');
      this.statements.dropAllBlocks(rec.id);
      await truncate(this.dataPath(rec.id), 0).catch(() => undefined);
      rec = { ...rec, ...attrs, size: base?.size ?? 0, fetchLimit: base?.size ?? 0, remoteEtag: base?.etag ?? null, dirty: base === null };
      this.statements.saveFile(rec);
    } else if (rec?.dirty && base && rec.remoteEtag !== base.etag) {
      this.ctx.log.warn({ key, cached: rec.remoteEtag, remote: base.etag }, 'object changed remotely while local changes are pending: the local version will replace it');
    }
    rec ??= this.statements.insert({ key, ...attrs, size: base?.size ?? 0, fetchLimit: base?.size ?? 0, remoteEtag: base?.etag ?? null, dirty: base === null, lastError: 0 });
    let fd;
    try {
      fd = await openFile(this.dataPath(rec.id), fsc.O_RDWR | fsc.O_CREAT, 0o600);
    } catch (err) {
      throw new VaultError('IO', `cannot open vault data file for ${JSON.stringify(key)}: ${(err as Error).message}`, { cause: err });
    }
    const states = this.statements.loadStates(rec.id, Math.ceil(rec.size / this.ctx.blockSize));
    const file = new CachedFile(this.ctx, rec, states, fd);
    file.openCount = 1;
    this.open.set(key, file);
    return file;
  }

  /** Release one handle of the file; the last one closes its data file. */
  async closeFile(file: CachedFile): Promise<void> {
    if (--file.openCount > 0) return;
    if (this.open.get(file.key) === file) this.open.delete(file.key);
    await file.closeData();
    if (file.unlinked) rmSync(this.dataPath(file.rec.id), { force: true });
  }

  /** Records under a key prefix, live ones of open files first (for listings of not-yet-uploaded files). */
  recordsUnder(prefix: string): FileRecord[] {
    const out = new Map<string, FileRecord>();
    for (const [key, f] of this.open) if (key.startsWith(prefix) && !f.unlinked) out.set(key, f.rec);
    for (const r of this.statements.underPrefix(prefix)) if (!out.has(r.key)) out.set(r.key, r);
    return [...out.values()];
  }

  /** Move a file's record to another key (after the objects were moved); a record at the target is replaced. */
  renameFile(fromKey: string, toKey: string): void {
    if (fromKey === toKey) return;
    this.removeRecord(toKey);
    const file = this.open.get(fromKey);
    const rec = file?.rec ?? this.statements.find(fromKey);
    if (!rec) return;
    rec.key = toKey;
    this.statements.saveFile(rec);
    if (file) {
      this.open.delete(fromKey);
      this.open.set(toKey, file);
    }
  }

  /** Forget a key's cached file; an open one lives on for its handles and is never uploaded. */
  removeRecord(key: string): void {
    const file = this.open.get(key);
    const rec = file?.rec ?? this.statements.find(key);
    if (!rec) return;
    this.statements.deleteFile(rec.id);
    if (file) {
      file.unlinked = true;
      this.open.delete(key);
    } else {
      rmSync(this.dataPath(rec.id), { force: true });
    }
  }

  /** The object was replaced by our own hand with the same bytes (metadata copy-in-place): keep the blocks. */
  rebase(key: string, etag: string, attrs: Partial<FileAttrs>): void {
    const rec = this.open.get(key)?.rec ?? this.statements.find(key);
    if (!rec || rec.dirty) return;
    Object.assign(rec, attrs, { remoteEtag: etag });
    this.statements.saveFile(rec);
  }

  /** Open files with unflushed changes. */
  dirtyOpenFiles(): CachedFile[] {
    return [...this.open.values()].filter((f) => f.dirty && !f.unlinked);
  }

  /** Tests: let go of everything as a killed process would — nothing committed, the stop not marked clean. */
  async simulateCrash(): Promise<void> {
    this.closed = true;
    for (const f of this.open.values()) await f.closeData().catch(() => undefined);
    this.db.close();
  }

  /** Close the vault: open files are committed, the stop is recorded as clean, the lock released. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.open.values()) {
      await f.commit().catch((err) => this.ctx.log.error({ key: f.key, err }, 'commit at close failed'));
      f.openCount = 1;
      await this.closeFile(f);
    }
    this.statements.setInfo('clean_shutdown', '1');
    this.db.close();
    rmSync(this.lockFile, { force: true });
  }
}

/** One process per vault: a lock file holding the owner's pid; a stale one (dead pid) is taken over. */
function takeLock(dir: string): string {
  const file = path.join(dir, 'vault.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new VaultError('IO', `cannot lock vault ${dir}: ${(err as Error).message}`, { cause: err });
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (pid && isAlive(pid)) throw new VaultError('IN_USE', `vault ${dir} is in use by s3vault process ${pid}`);
      unlinkSync(file);
    }
  }
  throw new VaultError('IN_USE', `cannot lock vault ${dir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
