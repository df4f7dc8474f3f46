/**
 * Checksums of fetched blocks that storage wrote into the data file itself (libcurl), computed once the vault is
 * idle instead of the moment the fetch lands. Summing them means reading the bytes back from the page cache:
 * about 0.45 s of main-thread CPU per GiB on a 2-core VM, which during a cold sequential read was the reader's
 * time (the machine is CPU-bound then). Idle, it costs nobody a wait.
 *
 * A clean block without its checksum yet is served like any other; only `fsck` cannot vouch for it until it is
 * summed, and nothing relies on it across a crash: an unclean stop drops every clean block (they refetch). The
 * vault's clean close sums whatever is still pending first.
 *
 * Each block is looked up, read and summed in one synchronous step, so no write can slip in between: a write
 * marks its block dirty before any byte moves, and a dirty block is never summed here (its commit sums it).
 */
import { closeSync } from 'node:fs';
import { blockSumsInFile } from './fetch-sink.js';

/** Where a pending block's bytes are now. */
export interface SumSource {
  fd: number;
  /** Bytes of the file (the block's checksum covers those within it, zero-padded as a short fetch leaves them). */
  size: number;
  /** The block still wants this checksum: clean, present, not being written. */
  wants(idx: number): boolean;
  /** Close the descriptor after use (one opened for a closed file). */
  owned: boolean;
}

export interface PendingSumsOptions {
  blockSize: number;
  /** The file's data now: undefined if it is gone (its pending blocks are forgotten), 'later' to keep them. */
  source: (fileId: number) => SumSource | 'later' | undefined;
  /** Store the checksums (only for blocks still clean and unsummed). */
  save: (fileId: number, sums: { idx: number; sum: string }[]) => void;
  /** Quiet this long (no fetch in flight, none ended) before summing starts. */
  idleMs?: number;
  /** Blocks summed per turn of the event loop: short enough that a FUSE request waits a few ms at most. */
  sliceBlocks?: number;
  /** Past this many pending blocks summing goes on whatever else runs (down to it), so a clean close never waits long. */
  backlogBlocks?: number;
}

export class PendingSums {
  private readonly pending = new Map<number, Set<number>>();
  private count = 0;
  private fetches = 0;
  /** Bumped whenever a fetch starts or ends or a file is read: a sweep stops when it moved. */
  private activity = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly o: PendingSumsOptions) {}

  /** Blocks awaiting their checksum. */
  get size(): number {
    return this.count;
  }

  /** Something read the vault: summing waits for quiet. */
  touch(): void {
    this.activity++;
  }

  fetchStarted(): void {
    this.fetches++;
    this.activity++;
  }

  fetchEnded(): void {
    this.fetches--;
    this.activity++;
    this.arm();
  }

  add(fileId: number, blocks: Iterable<number>): void {
    let set = this.pending.get(fileId);
    if (!set) this.pending.set(fileId, (set = new Set()));
    for (const b of blocks) {
      if (!set.has(b)) this.count++;
      set.add(b);
    }
    this.arm();
  }

  /** Sum everything still pending, now (a clean close). Blocks of files that must wait stay unsummed. */
  drain(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.pending.size && this.sweep(Infinity) > 0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    if (this.timer || this.stopped || this.pending.size === 0) return;
    const seen = this.activity;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.step(seen);
    }, this.o.idleMs ?? 500);
    this.timer.unref();
  }

  /**
   * One slice now, the next on a later turn, while all is quiet (or, busy, while more than the backlog waits);
   * files that must wait are tried again later.
   */
  private step(seen: number): void {
    if (this.stopped) return;
    let budget = this.o.sliceBlocks ?? 4;
    if (this.fetches > 0 || this.activity !== seen) budget = Math.min(budget, this.count - (this.o.backlogBlocks ?? 2048));
    if (budget > 0 && this.sweep(budget) > 0 && this.pending.size) setImmediate(() => this.step(seen));
    else this.arm();
  }

  /** Take up to `budget` pending blocks, file by file, summing those still wanted. Synchronous. Returns how many were taken. */
  private sweep(budget: number): number {
    let taken = 0;
    for (const id of [...this.pending.keys()]) {
      if (taken >= budget) break;
      const set = this.pending.get(id)!;
      const src = this.o.source(id);
      if (src === 'later') continue;
      const sums: { idx: number; sum: string }[] = [];
      try {
        for (const idx of set) {
          if (taken >= budget) break;
          taken++;
          this.count--;
          set.delete(idx);
          const sum = src && src.wants(idx) ? this.sumOf(src, idx) : undefined;
          if (sum !== undefined) sums.push({ idx, sum });
        }
      } finally {
        if (src?.owned) closeSync(src.fd);
      }
      if (set.size === 0) this.pending.delete(id);
      if (sums.length) {
        try {
          this.o.save(id, sums);
        } catch {
          // Not committed (the disk full): those blocks stay without a checksum, as blocks never summed are.
        }
      }
    }
    return taken;
  }

  private sumOf(src: SumSource, idx: number): string | undefined {
    const bs = this.o.blockSize;
    return blockSumsInFile(src.fd, idx, idx, bs, (b) => Math.min(bs, src.size - b * bs)).get(idx);
  }
}
