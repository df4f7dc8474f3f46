/**
 * Keeps the vault within its size limit. Accounting is by the bytes present blocks hold within their files.
 * Past the limit it evicts down to 90 % of it: first whole closed files, least recently used first (their
 * data file is truncated, so the space really returns to the disk), then clean blocks of open files,
 * least recently used first (hole punching). Never evicted: dirty data (until uploaded), pinned files,
 * blocks being read or fetched, files being opened or closed.
 */
import type { Logger } from '../log.js';
import type { CachedFile } from './cached-file.js';
import type { VaultStatements } from './statements.js';

export interface EvictorOptions {
  statements: VaultStatements;
  blockSize: number;
  limitBytes: number;
  usedBytes: number;
  openFiles: () => Iterable<CachedFile>;
  /** Keys whose files are open, opening or closing: their blocks are not the closed-file pass's to take. */
  isBusy: (key: string) => boolean;
  dropData: (fileId: number) => void;
  /** Called before choosing victims, so the use times it reads are current. */
  beforeEvict?: () => void;
  log: Logger;
}

export class Evictor {
  private used: number;
  private running = false;
  private scheduled = false;
  private warnedFull = false;

  constructor(private readonly o: EvictorOptions) {
    this.used = o.usedBytes;
  }

  get usedBytes(): number {
    return this.used;
  }

  private get limit(): number {
    return this.o.limitBytes;
  }

  account(delta: number): void {
    this.used += delta;
    if (delta > 0) this.maybeEvict();
  }

  /** Evict soon (after the current I/O callback), once, if over the limit. */
  maybeEvict(): void {
    if (this.used <= this.limit || this.scheduled || this.running) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.evict();
    });
  }

  /** Evict clean data as if the limit were `bytes` below what is held now (the vault's disk is full). */
  evictBytes(bytes: number): void {
    this.evict(Math.max(0, Math.min(this.limit, this.used - bytes)));
  }

  /** Synchronous: no read can slip between choosing a block and punching it. */
  evict(limit = this.limit): void {
    if (this.running || this.used <= limit) return;
    this.running = true;
    try {
      this.evictNow(limit);
    } catch (err) {
      // A commit that failed (the vault's disk full): nothing was dropped for it; the next account tries again.
      this.o.log.warn({ err: (err as Error).message }, 'vault eviction failed; will try again');
    } finally {
      this.running = false;
    }
  }

  private evictNow(limit: number): void {
    const target = Math.floor(limit * 0.9);
    this.o.beforeEvict?.();
    this.evictClosedFiles(target);
    if (this.used > target) this.evictOpenBlocks(target);
    if (this.used > this.limit && !this.warnedFull) {
      this.warnedFull = true;
      this.o.log.warn({ usedBytes: this.usedBytes, limitBytes: this.o.limitBytes }, 'vault is over its size limit: the rest is dirty, pinned or in use');
    } else if (this.used <= this.limit) this.warnedFull = false;
  }

  private evictClosedFiles(target: number): void {
    while (this.used > target) {
      const candidates = this.o.statements.closedCandidates(this.o.blockSize).filter((c) => !this.o.isBusy(c.key));
      if (candidates.length === 0) return;
      for (const c of candidates) {
        // The journal first: if its commit fails (disk full), the data is still there for what it says.
        this.o.statements.dropAllBlocks(c.id);
        this.o.dropData(c.id);
        this.used -= c.bytes;
        this.o.log.debug({ key: c.key, bytes: c.bytes }, 'evicted closed file');
        if (this.used <= target) return;
      }
    }
  }

  private evictOpenBlocks(target: number): void {
    const candidates = [...this.o.openFiles()].flatMap((f) => f.evictable()).sort((a, b) => a.used - b.used);
    for (const c of candidates) {
      if (this.used <= target) return;
      c.file.evictBlock(c.block); // accounts itself
    }
  }
}
