/**
 * Random reads fill the kernel's page cache a whole window at a time (FUSE_NOTIFY_STORE). A 4 KiB read at a
 * random offset is one FUSE request, answered by the JS main thread: on this 2-core VM about 10 000 a second at
 * best. The vault fetches a whole 1 MiB block for it anyway, so once the read is answered the block's bytes are
 * stored into the kernel's cache for the inode, and the next reads within it never leave the kernel.
 *
 * Storing overwrites the cached pages, so it must never race a writer: it is only done while no handle of the
 * inode is open for writing (a writer's dirty pages are written back before its release), and an open for
 * writing and a size change wait for stores in flight and hold new ones off. A store never reaches past the
 * file's size (the kernel would grow the file to cover it). The kernel may drop stored pages again (memory
 * pressure, posix_fadvise DONTNEED: fio does that at each pass over a file): a read that reaches s3vault in a
 * window stored over a second ago stores it again. The bytes are copied out of the vault first, so a
 * store needs no descriptor of the file. Stores run on libuv's thread pool (the kernel takes each page's lock,
 * which an unanswered read of that page holds), at most MAX_IN_FLIGHT at once; a read that finds them busy just
 * does without.
 */
import type { Logger } from '../../log.js';
import type { FuseLib } from './native.js';

type Ptr = unknown;

const O_ACCMODE = 3;
const O_RDONLY = 0;
const FUSE_BUF_NO_SPLICE = 1 << 1;
const MAX_IN_FLIGHT = 2;
/**
 * A window is stored again if a read in it still reaches s3vault this long after its last store: the kernel
 * dropped its pages. Sooner, the read was most likely sent before the store landed.
 */
const RESTORE_AFTER_MS = 1000;

/** The file's bytes [offset, offset + length), fewer at its end. */
export type WindowReader = (offset: number, length: number) => Promise<Buffer>;

interface InodeState {
  /** Windows stored since the inode was last opened, and when their store started (ms). */
  stored: Map<number, number>;
  /** Windows being read or stored now. */
  storing: Set<number>;
  writers: Set<number>;
  /** Opens for writing and size changes under way: no store may start. */
  holds: number;
  inFlight: Set<Promise<void>>;
}

export class PageStore {
  private readonly inodes = new Map<number, InodeState>();
  /** Per handle: where its last read ended (a read elsewhere is a random one). */
  private readonly readEnds = new Map<number, number>();
  private inFlight = 0;
  private failedOnce = false;

  constructor(
    private readonly lib: FuseLib,
    private readonly session: () => Ptr | null,
    private readonly log: Logger,
    private readonly window = 1024 * 1024,
  ) {}

  private state(ino: number): InodeState {
    let s = this.inodes.get(ino);
    if (!s) this.inodes.set(ino, (s = { stored: new Map(), storing: new Set(), writers: new Set(), holds: 0, inFlight: new Set() }));
    return s;
  }

  /**
   * Before an open is answered (flags), or a size change (flags undefined): waits for stores in flight, and an
   * open for writing or a size change holds new ones off until the returned `done` is called. Call `done(fh)`
   * once the open was answered (fh undefined if it failed, or for a size change): after an open without
   * keep_cache the kernel has dropped the inode's pages, so nothing counts as stored.
   */
  async hold(ino: number, flags: number | undefined): Promise<(fh?: number) => void> {
    const s = this.state(ino);
    const writer = flags === undefined || (flags & O_ACCMODE) !== O_RDONLY;
    if (writer) {
      s.holds++;
      s.stored.clear();
    }
    // Readers too: a store still in flight from a handle already released could be of a version this open no
    // longer shows (the kernel drops the inode's pages when it opens without keep_cache, not after).
    while (s.inFlight.size) await Promise.allSettled([...s.inFlight]);
    return (fh) => {
      if (fh !== undefined) s.stored.clear();
      if (!writer) return;
      s.holds--;
      if (fh !== undefined && flags !== undefined) s.writers.add(fh);
    };
  }

  released(ino: number, fh: number): void {
    this.readEnds.delete(fh);
    const s = this.inodes.get(ino);
    if (!s) return;
    s.writers.delete(fh);
    if (!s.writers.size && !s.inFlight.size && !s.holds) this.inodes.delete(ino);
  }

  forget(ino: number): void {
    const s = this.inodes.get(ino);
    if (s && !s.inFlight.size && !s.writers.size && !s.holds) this.inodes.delete(ino);
  }

  /** A large read was answered (never stored: the kernel asks that much only of sequential readers). */
  noteRead(fh: number, off: number, len: number): void {
    this.readEnds.set(fh, off + len);
  }

  /**
   * After a small read was answered: if it was a random one, store its window into the kernel's cache (once per
   * open of the inode, unless the kernel dropped the window's pages since: RESTORE_AFTER_MS).
   */
  afterRead(ino: number, fh: number, off: number, len: number, read: WindowReader): void {
    // A handle's first read at 0 counts as the start of a sequential one (cat of a small file reads it whole).
    const sequential = (this.readEnds.get(fh) ?? 0) === off;
    this.readEnds.set(fh, off + len);
    if (sequential || len === 0 || this.inFlight >= MAX_IN_FLIGHT) return;
    const s = this.state(ino);
    const w = Math.floor(off / this.window);
    if (s.writers.size || s.holds || s.storing.has(w)) return;
    const now = Date.now();
    const last = s.stored.get(w);
    if (last !== undefined && now - last < RESTORE_AFTER_MS) return;
    s.stored.set(w, now);
    s.storing.add(w);
    this.inFlight++;
    // The bytes are read first, as an event of their own: the store must not run inside one, since it may wait for
    // a page that another read of this file (queued behind that event) holds.
    const p = read(w * this.window, this.window)
      .then((data) => this.store(ino, s, w, data))
      .catch((err: unknown) => {
        s.stored.delete(w);
        this.log.debug({ ino, offset: w * this.window, err: (err as Error).message }, 'page cache store: window not read');
      })
      .finally(() => {
        this.inFlight--;
        s.storing.delete(w);
        s.inFlight.delete(p);
      });
    s.inFlight.add(p);
  }

  private store(ino: number, s: InodeState, w: number, data: Buffer): Promise<void> {
    const se = this.session();
    // A writer opened meanwhile, or the window was dropped by a hold: its bytes may be old.
    if (!se || data.length === 0 || s.writers.size || s.holds || !s.stored.has(w)) return Promise.resolve();
    const bufv = { count: 1, idx: 0, off: 0, buf: [{ size: data.length, flags: 0, mem: data, fd: -1, pos: 0 }] };
    return new Promise((resolve) => {
      this.lib.notifyStore.async(se, ino, w * this.window, bufv, FUSE_BUF_NO_SPLICE, (err: unknown, rc: number) => {
        void data; // alive until libfuse is done with it
        if ((err || rc !== 0) && !this.failedOnce) {
          this.failedOnce = true;
          this.log.debug({ ino, rc, err: err ? (err as Error).message : undefined }, 'page cache store refused by the kernel');
        }
        if (err || rc !== 0) s.stored.delete(w);
        resolve();
      });
    });
  }
}
