/**
 * Room kept for the journal on the vault's disk. A writer that fills the disk (the kernel writes a passthrough
 * file's data straight into its data file) left SQLite no page to commit to: no upload could record its attempt,
 * no `rm` its delete, no listing be stored, so nothing could ever free the disk through the mount. The vault keeps
 * a file of zeros (`reserve`, 8 MiB) beside its database; when the disk's free space falls under 1 MiB the file is
 * released, so the uploads and deletes that free space can be journaled, and clean data is evicted as if the vault
 * were over its size limit; a commit that fails for want of room releases it at once and is tried again. The
 * reserve is made again once there is room for it twice over.
 */
import { existsSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';

const RESERVE_BYTES = 8 * 1024 * 1024;
const LOW_BYTES = 1024 * 1024;
const CHECK_MS = 1000;

export interface DiskReserveOptions {
  dir: string;
  log: Logger;
  /** Evict clean data to free about this many bytes. */
  evict(bytes: number): void;
}

export class DiskReserve {
  private readonly file: string;
  private timer: NodeJS.Timeout | undefined;
  private held = false;

  constructor(private readonly o: DiskReserveOptions) {
    this.file = path.join(o.dir, 'reserve');
  }

  start(): this {
    this.held = existsSync(this.file);
    this.check();
    this.timer = setInterval(() => this.check(), CHECK_MS);
    this.timer.unref();
    return this;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** A commit found the disk full: give the reserve back now (true if there was one to give). */
  release(): boolean {
    if (!this.held) return false;
    rmSync(this.file, { force: true });
    this.held = false;
    this.o.log.warn({ dir: this.o.dir, releasedBytes: RESERVE_BYTES }, "vault disk full: released the vault's reserve so uploads and deletes can be recorded; clean data is evicted");
    return true;
  }

  private free(): number {
    const s = statfsSync(this.o.dir);
    return s.bavail * s.bsize;
  }

  check(): void {
    let free: number;
    try {
      free = this.free();
    } catch {
      return; // the directory gone (the vault closing): nothing to do
    }
    if (free < LOW_BYTES) {
      this.release();
      this.o.evict(RESERVE_BYTES);
      return;
    }
    if (!this.held && free > 2 * RESERVE_BYTES + LOW_BYTES) this.make();
  }

  private make(): void {
    try {
      // Written, not a sparse truncate: the blocks must really be taken, to be given back when it matters.
      writeFileSync(this.file, Buffer.alloc(RESERVE_BYTES));
      this.held = true;
    } catch {
      rmSync(this.file, { force: true });
    }
  }
}
