/**
 * Data files made ahead of need. Every new record gets an empty data file named for its id, and creating a file
 * is one of the dearest steps of a create on this VM's ext4 (35-150 µs of the main thread per file of a `cp -r`,
 * measured in CPU profiles): here the files for the next ids are made on the thread pool while the main thread
 * serves other requests, and a new record whose id has one takes its descriptor.
 *
 * SQLite gives a new row the largest id plus one, so after a record `id` was made the next ones are id + 1, id + 2...
 * A guess that misses (the largest record was removed, a spare could not be made) only means the usual open.
 *
 * Safety: a spare is only ever a file this pool made with O_EXCL (never one that was already there) for an id no
 * record has; nothing here removes a file once a record may own it. A record made while its id's spare is still
 * being created takes the usual path (which finds the file empty) and the spare's descriptor is closed, not removed; an unused spare is removed only when no record has its id.
 */
import { close, closeSync, constants as fsc, open, unlinkSync } from 'node:fs';
import path from 'node:path';

/** Spares kept ahead of the last id used. */
const AHEAD = 8;

export class DataFilePool {
  /** Spare files ready: id → descriptor. */
  private readonly ready = new Map<number, number>();
  /** Ids whose spare is being made. */
  private readonly making = new Set<number>();
  /** Ids taken by a record while their spare was being made: that spare is not to be used. */
  private readonly claimed = new Set<number>();
  private idle: (() => void) | undefined;
  private stopped = false;

  /** `owned`: whether a record has this id (its data file is then never removed here). */
  constructor(
    private readonly dir: string,
    private readonly owned: (id: number) => boolean,
  ) {}

  private pathOf(id: number): string {
    return path.join(this.dir, String(id));
  }

  /**
   * A new record got `id`: its spare's descriptor if one is ready (an empty file at its data path), else
   * undefined. Either way the spares for the ids after it start being made.
   */
  take(id: number): number | undefined {
    if (this.stopped) return undefined;
    const fd = this.ready.get(id);
    this.ready.delete(id);
    if (this.making.has(id)) this.claimed.add(id);
    for (let next = id + 1; next <= id + AHEAD; next++) if (!this.ready.has(next) && !this.making.has(next)) this.make(next);
    return fd;
  }

  private make(id: number): void {
    this.making.add(id);
    // As every open here, close-on-exec (libuv's default).
    open(this.pathOf(id), fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600, (err, fd) => {
      this.making.delete(id);
      if (!err) {
        // Taken meanwhile (the record made its file itself), or the vault is closing: the spare is not used.
        if (this.claimed.delete(id)) close(fd, () => undefined);
        else if (this.stopped) this.discard(id, fd);
        else this.ready.set(id, fd);
      } else this.claimed.delete(id); // EEXIST (left by a crash, or the record's own): not ours, left alone
      if (this.making.size === 0) this.idle?.();
    });
  }

  private discard(id: number, fd: number): void {
    try {
      closeSync(fd);
      // A record made while the vault closed took its file with the usual open: it is the record's now.
      if (!this.owned(id)) unlinkSync(this.pathOf(id));
    } catch {
      // Gone already: nothing to tidy.
    }
  }

  /** At the vault's close, when no record is made any more: the unused spares go. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.making.size > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    for (const [id, fd] of this.ready) this.discard(id, fd);
    this.ready.clear();
  }
}
