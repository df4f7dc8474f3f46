/**
 * The FUSE adapter: a dispatch table from libfuse low-level operations to CBFS events (src/fs/cbfs).
 * Requests are read and handed to libfuse on the Node main thread (request-loop.ts); each operation callback
 * only decodes its arguments, starts the event and returns. The reply (fuse_reply_*) is sent when the event
 * settles — so a read waiting on S3 never blocks other requests. Every request is answered exactly once
 * (`answer`).
 * Never touch the mountpoint from this process: the main thread would wait on the kernel, which waits on it.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Logger } from '../../log.js';
import type { AttributeChange, CbfsHandlers, DirEntry, FileInfo } from '../cbfs/events.js';
import { RENAME_EXCHANGE } from '../cbfs/events.js';
import { E, FsError, toFsError } from '../errors.js';
import { joinPath } from '../mirror/keys.js';
import { InodeTable, ROOT_INO } from './inodes.js';
import { PageStore } from './page-store.js';
import { canServeOnMainThread, serveOnMainThread } from './request-loop.js';
import { clearedMode, killRequest, negotiateInit, type KillRequest } from './init.js';
import { BackingFiles, FOPEN_PASSTHROUGH, openOutBuffer } from './passthrough.js';
import { copyIn, decodeName, fixMallocThresholds, loadFuse, OP_NAMES, OP_PROTOS, OPS_SIZE, readI32, readI64, readU32, registerCallback, writeU32, type FuseLib, type OpName, type Ptr } from './native.js';
import { createOutBuffer, DirentReply, entryBuffer, FI_BITS, FILE_INFO, fileInfoBuffer, negativeEntryBuffer, statBuffer, statvfsBuffer, STAT, typeBits } from './structs.js';

export interface FuseOptions {
  mountpoint: string;
  fsname: string;
  readOnly?: boolean;
  allowOther?: boolean;
  /** Seconds the kernel may cache attributes and names. */
  attrTimeout?: number;
  negativeTimeout?: number;
  maxThreads?: number;
  /** FUSE passthrough for files whose data is all in the vault (default on; off when the kernel lacks it). */
  passthrough?: boolean;
  /** Random reads store their 1 MiB window into the kernel's page cache (PageStore; default on). */
  pageCacheFill?: boolean;
  log: Logger;
}

/** Reads this large are answered from the data file by libfuse (smaller ones: a synchronous pread is cheaper). */
const FD_REPLY_MIN = 256 * 1024;
const FUSE_BUF_IS_FD = 1 << 1;
const FUSE_BUF_FD_SEEK = 1 << 2;
const FUSE_BUF_NO_SPLICE = 1 << 1;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const O_WRONLY = 0o1;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
/** Attempts of an event whose inode a rename keeps moving while it waits (atPath). */
const MOVED_ATTEMPTS = 3;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const SET = { MODE: 1, UID: 2, GID: 4, SIZE: 8, ATIME: 16, MTIME: 32, ATIME_NOW: 128, MTIME_NOW: 256 } as const;

interface DirHandle {
  path: string;
  /** After "." and "..": what the backend listed (DirEntry.exact: READDIRPLUS hands the attributes over). */
  listed: DirEntry[];
  /** Node ids of "." and "..". */
  self: number;
  parent: number;
}

/** Kernel notifications run at once (each holds a koffi asynchronous call, whose number koffi bounds). */
const NOTIFY_CONCURRENCY = 16;

export class FuseSession {
  private readonly lib: FuseLib;
  private readonly inodes = new InodeTable();
  private readonly dirs = new Map<number, DirHandle>();
  /** The data version each inode showed at its last open (keep_cache when it has not changed). */
  private readonly cacheTokens = new Map<number, string>();
  /** Open handles per inode: an inode whose name went away (unlink, rename over it) still answers through them. */
  private readonly inoHandles = new Map<number, Set<number>>();
  private nextDir = 1;
  private readonly callbacks: { release(): void }[] = [];
  private se: Ptr | null = null;
  private loopDone: Promise<number> | null = null;
  private readonly attrTimeout: number;
  private readonly negativeTimeout: number;
  private unmounting = false;
  /** Set when the kernel agreed to FUSE passthrough. */
  private backing: BackingFiles | undefined;
  private backingWorked = false;
  /** Kernel notifications (invalidations) waiting for a worker thread, and how many run. */
  private readonly notifyQueue: ((done: () => void) => void)[] = [];
  private notifyRunning = 0;
  /** Inodes served by passthrough: one backing id each (the kernel wants the same one for every handle). */
  private readonly passthroughInodes = new Map<number, { id: number; handles: Set<number>; writers: Set<number> }>();
  private pageStore: PageStore | undefined;
  /** Set when the kernel agreed to FUSE_HANDLE_KILLPRIV_V2: writes and chowns leave the bits to us. */
  private killPriv = false;
  /** Whether the request being dispatched asks for them to be cleared (read from it before libfuse parses it). */
  private killRequested: KillRequest | null = null;

  constructor(
    private readonly fs: CbfsHandlers,
    private readonly options: FuseOptions,
  ) {
    this.lib = loadFuse();
    this.attrTimeout = options.attrTimeout ?? 1;
    this.negativeTimeout = options.negativeTimeout ?? 0;
  }

  private get log(): Logger {
    return this.options.log;
  }

  /** Create the session and mount it. Throws FsError-free plain Errors with a clear message. */
  mount(): void {
    fixMallocThresholds();
    const ops = Buffer.alloc(OPS_SIZE);
    const impl = this.operations();
    OP_NAMES.forEach((name, i) => {
      const proto = OP_PROTOS[name];
      const fn = impl[name];
      if (!proto || !fn) return;
      const cb = registerCallback(proto, fn as (...args: never[]) => void);
      this.callbacks.push(cb);
      ops.writeBigUInt64LE(cb.ptr, i * 8);
    });
    const opts = [`fsname=${this.options.fsname}`, 'subtype=s3vault', 'default_permissions'];
    if (this.options.readOnly) opts.push('ro');
    if (this.options.allowOther) opts.push('allow_other');
    const se = this.lib.sessionNew(this.lib.makeArgs(['s3vault', '-o', opts.join(',')]), ops, OPS_SIZE, null) as Ptr | null;
    if (!se) throw new Error('fuse_session_new failed (bad mount options?)');
    if (this.lib.sessionMount(se, this.options.mountpoint) !== 0) {
      this.lib.sessionDestroy(se);
      throw new Error(`cannot mount FUSE at ${this.options.mountpoint} (see the message above; is it already mounted?)`);
    }
    this.se = se;
    if (this.options.pageCacheFill !== false) this.pageStore = new PageStore(this.lib, () => this.se, this.log);
    // Both need the INIT reply amended; the kill flags need the raw requests, which only the main-thread loop sees.
    const want = {
      passthrough: this.options.passthrough !== false,
      killPrivV2: this.mainThreadLoop(),
    };
    if (want.passthrough || want.killPrivV2) {
      try {
        const told = negotiateInit(this.lib, se, want, this.log);
        if (told.passthrough) this.backing = new BackingFiles(this.lib, se);
        this.killPriv = told.killPrivV2;
      } catch (err) {
        this.lib.sessionUnmount(se);
        this.lib.sessionDestroy(se);
        this.se = null;
        throw err;
      }
    }
    this.raiseReadAhead();
    this.fs.setNotifier?.({ invalidate: (path) => this.invalidate(path) });
  }

  /**
   * The kernel forgets what it cached about a path and everything under it: attributes, page cache, and the
   * name itself. The notify calls can block on the kernel's inode locks (held by a request waiting for us), so
   * they run on a worker thread, never on the main thread.
   */
  invalidate(path: string): Promise<void> {
    const se = this.se;
    if (!se || this.unmounting) return Promise.resolve();
    const calls: Promise<void>[] = [];
    for (const { path: p, ino } of this.inodes.under(path)) {
      this.cacheTokens.delete(ino);
      calls.push(this.notify((done) => this.lib.invalInode.async(se, ino, 0, 0, done)));
      if (p === '/') continue;
      const parent = this.inodes.peekExisting(p.slice(0, p.lastIndexOf('/')) || '/');
      const name = p.slice(p.lastIndexOf('/') + 1);
      if (parent !== undefined) calls.push(this.notify((done) => this.lib.invalEntry.async(se, parent, name, Buffer.byteLength(name), done)));
    }
    return Promise.all(calls).then(() => undefined);
  }

  /**
   * Run a notify call on a worker thread, at most NOTIFY_CONCURRENCY at once: koffi refuses more asynchronous calls
   * than its limit ("Too many asynchronous calls are running"), which `s3vault refresh` of a tree of a few hundred
   * known files passed (two calls per inode).
   */
  private notify(call: (done: () => void) => void): Promise<void> {
    return new Promise((resolve) => {
      this.notifyQueue.push((slotFree) => {
        const done = () => {
          slotFree();
          resolve();
        };
        try {
          call(done);
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, 'kernel cache invalidation failed');
          done();
        }
      });
      this.pumpNotify();
    });
  }

  private pumpNotify(): void {
    while (this.notifyRunning < NOTIFY_CONCURRENCY && this.notifyQueue.length) {
      const start = this.notifyQueue.shift()!;
      this.notifyRunning++;
      start(() => {
        this.notifyRunning--;
        this.pumpNotify();
      });
    }
  }

  /**
   * The kernel reads ahead 128 KiB on a FUSE mount unless told otherwise; 1 MiB (one vault block, the max_readahead
   * asked for in init) makes large sequential reads markedly faster. Root only (sysfs); silently skipped otherwise.
   * Reads /proc, never the mountpoint itself.
   */
  private raiseReadAhead(): void {
    try {
      const line = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .find((l) => l.split(' ')[4] === this.options.mountpoint);
      const dev = line?.split(' ')[2];
      if (dev) writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, '1024');
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'could not raise the read-ahead of the mount');
    }
  }

  /** Serve requests until the filesystem is unmounted: on the main thread (request-loop.ts), else libfuse's threads. */
  run(): Promise<number> {
    if (!this.se) throw new Error('not mounted');
    if (this.mainThreadLoop()) {
      const served = serveOnMainThread(this.lib, this.se, this.log, this.killPriv ? (buf, n) => void (this.killRequested = killRequest(buf, n)) : undefined);
      if (served) {
        this.loopDone = served;
        return served;
      }
      this.log.warn('cannot poll /dev/fuse from the main thread: serving FUSE requests on libfuse threads');
    }
    const cfg = this.lib.loopCfgCreate();
    this.lib.loopCfgSetMaxThreads(cfg, this.options.maxThreads ?? 16);
    this.loopDone = new Promise((resolve, reject) => {
      this.lib.loopMt.async(this.se, cfg, (err: unknown, res: number) => (err ? reject(err) : resolve(res)));
    });
    return this.loopDone;
  }

  private mainThreadLoop(): boolean {
    return process.env.S3VAULT_FUSE_THREADS !== '1' && canServeOnMainThread();
  }

  /** Whether the request now being dispatched asks for set-user-ID/set-group-ID to be cleared: read at once. */
  private takeKill(): KillRequest | null {
    const kill = this.killRequested;
    this.killRequested = null;
    return kill;
  }

  /**
   * The mode a regular file keeps once set-user-ID (and set-group-ID, by the kernel's rules) are cleared for a
   * request; undefined when it has none to clear. `handle`: an open file's (a WRITE is flagged whenever its caller
   * lacks CAP_FSETID, whatever the mode: its handle answers cheapest).
   */
  private async clearedModeFor(path: string, kill: KillRequest, handle?: number): Promise<number | undefined> {
    const info = handle !== undefined ? await this.fs.getHandleInfo(handle) : await this.fs.getFileInfo(path);
    if (!info || info.kind !== 'file' || !(info.mode & 0o6000)) return undefined;
    const mode = clearedMode(info.mode, info.gid, kill, (gid) => gid === kill.gid || supplementaryGroups(kill.pid).includes(gid));
    return mode === info.mode ? undefined : mode;
  }

  /**
   * Clear them for a request whose reply carries no attributes (OPEN, WRITE): the kernel is then told its cached
   * mode is stale, before the reply, on a worker thread (a notification can wait on the kernel's inode locks).
   */
  private async killSuidGid(path: string, kill: KillRequest, ino: number, handle?: number): Promise<void> {
    const mode = await this.clearedModeFor(path, kill, handle);
    if (mode === undefined) return;
    await this.fs.setFileAttributes(path, { mode });
    const se = this.se;
    if (se) await new Promise<void>((resolve) => this.lib.invalInode.async(se, ino, -1, 0, () => resolve()));
  }

  /**
   * Unmount as umount(8) does: 'busy' (nothing changes) while a file is open in the mount or a process has its
   * working directory there. On success the loop returns, as after unmount().
   */
  async tryUnmount(): Promise<'done' | 'busy'> {
    if (this.unmounting || !this.se) return 'done';
    const r = await runCommand('fusermount3', ['-u', this.options.mountpoint]);
    if (r.code === 0) {
      this.unmounting = true;
      return 'done';
    }
    if (/busy/i.test(r.stderr)) return 'busy';
    throw new Error(`cannot unmount ${this.options.mountpoint}: ${r.stderr.trim() || `fusermount3 exited with ${r.code}`}`);
  }

  /** Unmount (from a signal or the CLI): the loop returns, then `close()` frees the session. */
  async unmount(): Promise<void> {
    if (this.unmounting || !this.se) return;
    this.unmounting = true;
    const mp = this.options.mountpoint;
    if ((await runCommand('fusermount3', ['-u', mp])).code !== 0) {
      this.log.warn({ mountpoint: mp }, 'mount busy: detaching it lazily (it disappears once the last file is closed)');
      await runCommand('fusermount3', ['-u', '-z', mp]);
    }
  }

  /** After the loop has returned: destroy the session and release the callbacks. */
  close(): void {
    if (!this.se) return;
    this.lib.sessionDestroy(this.se);
    this.se = null;
    for (const cb of this.callbacks) cb.release();
    this.callbacks.length = 0;
  }

  // ---- reply helpers ----

  /** Run an event and answer the request exactly once: the reply on success, an errno on failure. */
  private answer(req: Ptr, op: string, path: string, work: () => Promise<void>): void {
    work().catch((err: unknown) => {
      const fe = toFsError(err, op, path);
      if (fe.errno === E.EIO || fe.errno === E.EACCES || fe.errno === E.ESTALE) this.log.error({ op, path, errno: fe.errno, err: fe.message }, 'request failed');
      else this.log.debug({ op, path, errno: fe.errno }, 'request failed');
      this.lib.replyErr(req, fe.errno);
    });
  }

  private pathOf(ino: number | bigint, op: string): string {
    const p = this.inodes.path(Number(ino));
    if (p === undefined || p.includes('\0')) {
      // Removed meanwhile (a directory a shell is still in, a handle kept open): gone, as on a local disk.
      if (p !== undefined && this.inodes.removed(Number(ino))) throw new FsError(E.ENOENT, op, `inode ${ino} (removed)`);
      throw new FsError(E.ESTALE, op, `inode ${ino}`);
    }
    return p;
  }

  /** A name from the kernel: not valid UTF-8 → EILSEQ (S3 keys are UTF-8; a lossy decode would merge names). */
  private name(ptr: Ptr, op: string): string {
    const name = decodeName(ptr);
    if (name === null) throw new FsError(E.EILSEQ, op, 'a name that is not valid UTF-8');
    return name;
  }

  /**
   * A child's path, as a function for atPath: the name is decoded now (libfuse reuses its buffer once the callback
   * returns), the parent's path each time it is called.
   */
  private child(parent: number | bigint, namePtr: Ptr, op: string): () => string {
    const name = this.name(namePtr, op);
    return () => joinPath(this.pathOf(parent, op), name);
  }

  /**
   * Run an event at the path its inode has, and again at the new one if a rename moved the inode (or a directory
   * above it) while the event waited behind another of that name: the kernel names objects by number, so the path
   * resolved when the request came names where the object was. A local disk would have served it where it went.
   * A query runs again whenever its path changed meanwhile (an old path may find nothing, or another object); a
   * change only when it failed with ENOENT, which the backend answers before it changes anything. Bounded: a name
   * moved on each attempt gets the last answer.
   */
  private async atPath<P extends string | readonly string[], T>(op: string, resolve: () => P, fn: (path: P) => Promise<T>, query: boolean): Promise<[P, T]> {
    const key = (p: P) => (typeof p === 'string' ? p : p.join('\0'));
    // Where the inode is now, if a rename moved it; not if unchanged or removed meanwhile (nothing to follow).
    const movedTo = (path: P): P | undefined => {
      try {
        const now = resolve();
        return key(now) === key(path) ? undefined : now;
      } catch {
        return undefined;
      }
    };
    for (let attempt = 1; ; attempt++) {
      const path = resolve();
      let result: T;
      try {
        result = await fn(path);
      } catch (err) {
        const now = attempt < MOVED_ATTEMPTS && err instanceof FsError && err.errno === E.ENOENT ? movedTo(path) : undefined;
        if (now === undefined) throw err;
        this.log.debug({ op, path, now }, 'path moved while the request waited: served at the new one');
        continue;
      }
      const now = query && attempt < MOVED_ATTEMPTS ? movedTo(path) : undefined;
      if (now === undefined) return [path, result];
      this.log.debug({ op, path, now }, 'path moved while the request waited: served at the new one');
    }
  }

  /**
   * Where a parent's entry is now, at the reply: a directory move may have taken the parent along while the
   * request waited for it (the backend then made the entry at the new name).
   */
  private entryPath(parent: number | bigint, path: string): string {
    const dir = this.inodes.path(Number(parent));
    if (dir === undefined || dir.includes('\0')) return path;
    return joinPath(dir, path.slice(path.lastIndexOf('/') + 1));
  }

  private caller(req: Ptr): { uid: number; gid: number; pid: number } {
    const ctx = this.lib.reqCtx(req) as Ptr;
    return { uid: readU32(ctx, 0), gid: readU32(ctx, 4), pid: readU32(ctx, 8) };
  }

  private opened(ino: number, fh: number): void {
    let set = this.inoHandles.get(ino);
    if (!set) this.inoHandles.set(ino, (set = new Set()));
    set.add(fh);
  }

  /** FUSE keep_cache when the file's data is the version the kernel cached at the inode's last open. */
  private openBits(ino: number, fh: number): number {
    const token = this.fs.cacheToken?.(fh);
    if (token === undefined) return 0;
    const keep = this.cacheTokens.get(ino) === token;
    this.cacheTokens.set(ino, token);
    return keep ? FI_BITS.keepCache : 0;
  }

  /**
   * Serve this open (or create) by passthrough when the data is all in the vault: the kernel then reads and writes
   * the data file itself, and the backend adopts what was written at getattr, flush, fsync and release.
   * The kernel keeps one I/O mode per inode: an inode with ordinary handles open gets no passthrough handle, and
   * one with passthrough handles open gets only passthrough handles. Returns the backing id, or 0 for an
   * ordinary open.
   */
  private passthroughOpen(ino: number, handle: number, flags: number): number {
    const backing = this.backing;
    if (!backing || !this.fs.passthroughFd) return 0;
    const state = this.passthroughInodes.get(ino);
    const writable = (flags & 3) !== 0;
    if (!state && (this.inoHandles.get(ino)?.size ?? 0) > 1) {
      this.log.debug({ ino }, 'not passthrough: other handles open');
      return 0;
    }
    const fd = this.fs.passthroughFd(handle, state !== undefined);
    if (fd === undefined) {
      this.log.debug({ ino }, 'not passthrough: data not all in the vault');
      return 0;
    }
    let entry = state;
    if (!entry) {
      const id = backing.open(fd);
      if (id <= 0) {
        // Refused the first time: no passthrough after all (kernel, CAP_SYS_ADMIN); stop trying. Later: this file only.
        if (!this.backingWorked) {
          this.log.info({ errno: -id }, 'FUSE passthrough unavailable: reads go through s3vault');
          this.backing = undefined;
        } else this.log.debug({ errno: -id, ino }, 'FUSE passthrough refused for this file');
        return 0;
      }
      this.backingWorked = true;
      entry = { id, handles: new Set(), writers: new Set() };
      this.passthroughInodes.set(ino, entry);
    }
    entry.handles.add(handle);
    if (writable) {
      entry.writers.add(handle);
      // The kernel's page cache of this inode no longer tells the truth after writes it did not see.
      this.cacheTokens.delete(ino);
    }
    this.fs.passthroughOpened?.(handle, writable);
    // One line per passthrough open (debug): the kernel fails an open with EIO when it meets the other I/O mode.
    this.log.debug({ ino, handle, backing: entry.id, handles: entry.handles.size }, 'passthrough');
    return entry.id;
  }

  private passthroughReleased(ino: number, handle: number): void {
    const entry = this.passthroughInodes.get(ino);
    if (!entry?.handles.delete(handle)) return;
    entry.writers.delete(handle);
    if (entry.handles.size) return;
    this.passthroughInodes.delete(ino);
    this.backing?.close(entry.id);
  }

  private async setAttributes(req: Ptr, ino: number, change: AttributeChange, handle: number | undefined): Promise<void> {
    const orphan = this.orphanHandle(Number(ino));
    const resolve = () => (orphan !== undefined ? (this.inodes.path(Number(ino)) ?? '') : this.pathOf(ino, 'setattr'));
    const changing = Object.keys(change).length > 0;
    const [path, info] = await this.atPath('setattr', resolve, (p) => (changing ? this.fs.setFileAttributes(p, change, handle) : this.fs.getFileInfo(p)), !changing);
    if (!info) throw new FsError(E.ENOENT, 'setattr', path);
    if (!this.sameObject(ino, info)) throw new FsError(E.ENOENT, 'setattr', `${path} (replaced by a ${info.kind})`);
    this.inodes.noteDir(Number(ino), info);
    this.lib.replyAttr(req, statBuffer(Number(ino), info), this.attrTimeout);
  }

  /** Reply to a read with bytes of a file: pread and write to /dev/fuse happen in libfuse, off the main thread. */
  private replyFromFile(req: Ptr, fd: number, pos: number, len: number): Promise<void> {
    if (len === 0) {
      this.lib.replyBuf(req, null, 0);
      return Promise.resolve();
    }
    // struct fuse_bufvec { count, idx, off, buf[1] = { size, flags, mem, fd, pos } }
    const bufv = Buffer.alloc(64);
    bufv.writeBigUInt64LE(1n, 0);
    bufv.writeBigUInt64LE(BigInt(len), 24);
    bufv.writeInt32LE(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK, 32);
    bufv.writeInt32LE(fd, 48);
    bufv.writeBigInt64LE(BigInt(pos), 56);
    return new Promise((resolve) => {
      this.lib.replyData.async(req, bufv, FUSE_BUF_NO_SPLICE, () => {
        void bufv; // alive until libfuse is done with it
        resolve();
      });
    });
  }

  private released(ino: number, fh: number): void {
    const set = this.inoHandles.get(ino);
    set?.delete(fh);
    if (set && !set.size) this.inoHandles.delete(ino);
  }

  /** A handle open on an inode that lost its name, if any. */
  private orphanHandle(ino: number): number | undefined {
    const p = this.inodes.path(ino);
    if (p !== undefined && !p.includes('\0')) return undefined;
    return this.inoHandles.get(ino)?.values().next().value;
  }

  /** The directory handle of a readdir request, or EBADF answered. */
  private openDir(req: Ptr, fi: Ptr): DirHandle | undefined {
    const dir = this.dirs.get(this.fh(fi));
    if (!dir) this.lib.replyErr(req, E.EBADF);
    return dir;
  }

  /**
   * READDIR, and READDIRPLUS (`plus`): entries are numbered 1 (".") and 2 (".."), then the listed ones; a reply
   * resumes after the offset the kernel had. Each entry's path and node id are worked out here, for the entries a
   * reply holds: at opendir that was 10 000 path joins and look-ups again for every `ls -l` of a 10 000-entry
   * directory. With `plus`, entries whose attributes the backend knows go to the kernel with them (one reply per page
   * of names instead of a LOOKUP per name: `ls -l` of a warm directory); the others carry no node id, so the kernel
   * looks them up as after a plain readdir.
   */
  private replyDir(req: Ptr, size: number, off: number, fi: Ptr, plus: boolean): void {
    const dir = this.openDir(req, fi);
    if (!dir) return;
    const reply = new DirentReply(size, plus);
    // Where the directory is now: a move since it was opened took its entries along (a path of the old name would
    // give each entry a new number, and a later file or directory of that name the old one's).
    const now = this.inodes.path(dir.self);
    const dirPath = now !== undefined && !now.includes('\0') && dir.path !== '' ? now : dir.path;
    for (let i = off; i < dir.listed.length + 2; i++) {
      const e = i < 2 ? undefined : dir.listed[i - 2]!;
      const name = e ? e.name : i === 0 ? '.' : '..';
      const bytes = reply.room(name);
      if (bytes < 0) break;
      // "." and ".." go without attributes: the kernel takes no reference on them.
      if (!e) reply.add(name, bytes, i === 0 ? dir.self : dir.parent, 0o040000, i + 1);
      else {
        const path = joinPath(dirPath, name);
        // Sent with its node id, the kernel holds a reference (as after a LOOKUP) to the number the path has now.
        if (plus && e.exact) {
          // A file open now may have changed since the listing was taken (at opendir): its attributes as they are.
          const info = (e.info.kind === 'file' && this.fs.openFileInfo?.(path)) || e.info;
          const ino = this.inodes.lookup(path, info.kind);
          this.inodes.noteDir(ino, info);
          reply.add(name, bytes, ino, typeBits(info), i + 1, { info, timeout: this.attrTimeout });
        }
        else reply.add(name, bytes, this.inodes.peek(path), typeBits(e.info), i + 1);
      }
    }
    this.lib.replyBuf(req, reply.buf, reply.used);
  }

  /**
   * Whether the node's path still holds the object the kernel knows by this number. One of another kind is another
   * object (the path was replaced by a change the table learnt of late: a look-up answered before an unlink and
   * registered after it, another client): the number is detached from the path, as after an unlink. The kernel
   * marks an inode whose type changes bad (EIO on every use, open descriptors too).
   */
  private sameObject(ino: number, info: FileInfo): boolean {
    if (this.inodes.sameKind(Number(ino), info.kind)) return true;
    this.inodes.detach(Number(ino));
    return false;
  }

  /**
   * getattr of a number whose object lost its name (unlinked or replaced while open, a directory removed while in
   * use): the attributes its holders still see, from an open handle or as the directory last was. False if neither.
   */
  private async replyRemovedAttr(req: Ptr, ino: number): Promise<boolean> {
    const orphan = this.orphanHandle(ino);
    const info = orphan !== undefined ? await this.fs.getHandleInfo(orphan) : this.inodes.removedDir(ino);
    // Never another type than the kernel has for the number: it would mark the inode bad (EIO to its holders).
    if (!info || !this.inodes.sameKind(ino, info.kind)) return false;
    this.lib.replyAttr(req, statBuffer(ino, info), this.attrTimeout);
    return true;
  }

  private replyEntry(req: Ptr, path: string, info: FileInfo): void {
    const ino = this.inodes.lookup(path, info.kind);
    this.inodes.noteDir(ino, info);
    this.lib.replyEntry(req, entryBuffer(ino, info, this.attrTimeout));
  }

  /** xattr replies: size 0 asks for the length; too small a buffer is ERANGE. */
  private replySized(req: Ptr, value: Buffer, size: number): void {
    if (size === 0) this.lib.replyXattr(req, value.length);
    else if (size < value.length) this.lib.replyErr(req, E.ERANGE);
    else this.lib.replyBuf(req, value, value.length);
  }

  private fh(fi: Ptr): number {
    return Number(readI64(fi, FILE_INFO.fh));
  }

  // ---- the dispatch table ----

  private operations(): Partial<Record<OpName, (...args: never[]) => void>> {
    const lib = this.lib;
    const fs = this.fs;
    return {
      init: (_userdata: Ptr, conn: Ptr) => {
        // Ask for large requests: 1 MiB writes (max_write @8) and read-ahead (max_readahead @16).
        writeU32(conn, 8, 1024 * 1024);
        writeU32(conn, 16, 1024 * 1024);
      },
      destroy: () => {},
      lookup: (req: Ptr, parent: number, name: Ptr) =>
        this.answer(req, 'lookup', `inode ${parent}`, async () => {
          const [path, info] = await this.atPath('lookup', this.child(parent, name, 'lookup'), (p) => fs.getFileInfo(p), true);
          if (!info) {
            if (this.negativeTimeout > 0) lib.replyEntry(req, negativeEntryBuffer(this.negativeTimeout));
            else lib.replyErr(req, E.ENOENT);
            return;
          }
          // Its parent may have moved meanwhile: the entry is registered where it is now, under the same number.
          this.replyEntry(req, this.entryPath(parent, path), info);
        }),
      forget: (req: Ptr, ino: number, nlookup: number) => {
        this.inodes.forget(Number(ino), Number(nlookup));
        this.pageStore?.forget(Number(ino));
        lib.replyNone(req);
      },
      getattr: (req: Ptr, ino: number) =>
        this.answer(req, 'getattr', `inode ${ino}`, async () => {
          if (await this.replyRemovedAttr(req, Number(ino))) return;
          for (const h of this.passthroughInodes.get(Number(ino))?.writers ?? []) fs.adoptPassthroughWrites?.(h);
          const [path, info] = await this.atPath('getattr', () => this.pathOf(ino, 'getattr'), (p) => fs.getFileInfo(p), true);
          if (!info) throw new FsError(E.ENOENT, 'getattr', path);
          // Replaced (detached now): a descriptor still open on the old object describes that object.
          if (!this.sameObject(ino, info)) {
            if (await this.replyRemovedAttr(req, Number(ino))) return;
            throw new FsError(E.ENOENT, 'getattr', `${path} (replaced by a ${info.kind})`);
          }
          this.inodes.noteDir(Number(ino), info);
          lib.replyAttr(req, statBuffer(Number(ino), info), this.attrTimeout);
        }),
      setattr: (req: Ptr, ino: number, attr: Ptr, toSet: number, fi: Ptr | null) => {
        const change: AttributeChange = {};
        if (toSet & SET.MODE) change.mode = readU32(attr, STAT.mode) & 0o7777;
        if (toSet & SET.UID) change.uid = readU32(attr, STAT.uid);
        if (toSet & SET.GID) change.gid = readU32(attr, STAT.gid);
        if (toSet & SET.SIZE) change.size = readI64(attr, STAT.size);
        if (toSet & SET.MTIME_NOW) change.mtimeMs = Date.now();
        else if (toSet & SET.MTIME) change.mtimeMs = readI64(attr, STAT.mtim) * 1000 + Math.floor(readI64(attr, STAT.mtim + 8) / 1e6);
        const handle = fi ? this.fh(fi) : this.orphanHandle(Number(ino));
        const kill = this.takeKill();
        this.answer(req, 'setattr', `inode ${ino}`, async () => {
          // A size change: no page of the old size may be stored after it.
          const stored = change.size !== undefined ? await this.pageStore?.hold(Number(ino), undefined) : undefined;
          try {
            // Cleared in the same change (one attribute update: a chown of an uploaded file is one copy, not two).
            if (kill && change.mode === undefined && this.orphanHandle(Number(ino)) === undefined) change.mode = await this.clearedModeFor(this.pathOf(ino, 'setattr'), kill);
            if (change.mode === undefined) delete change.mode;
            await this.setAttributes(req, ino, change, handle);
          } finally {
            stored?.();
          }
        });
      },
      mkdir: (req: Ptr, parent: number, name: Ptr, mode: number) => {
        const caller = this.caller(req);
        this.answer(req, 'mkdir', `inode ${parent}`, async () => {
          const [path, info] = await this.atPath('mkdir', this.child(parent, name, 'mkdir'), (p) => fs.createDirectory(p, mode, caller), false);
          this.replyEntry(req, this.entryPath(parent, path), info);
        });
      },
      // mknod(2): a regular file is created empty (Python's os.mknod); S3 holds no FIFOs, sockets or
      // device files, and EPERM is what mknod(2) says for a type the filesystem does not support.
      mknod: (req: Ptr, parent: number, name: Ptr, mode: number) => {
        const caller = this.caller(req);
        this.answer(req, 'mknod', `inode ${parent}`, async () => {
          const at = this.child(parent, name, 'mknod');
          if ((mode & S_IFMT) !== S_IFREG) throw new FsError(E.EPERM, 'mknod', at(), 'S3 holds no FIFOs, sockets or device files');
          const [path, { handle, info }] = await this.atPath('mknod', at, (p) => fs.createFile(p, mode & 0o7777, O_WRONLY | O_CREAT | O_EXCL, caller), false);
          await fs.closeFile(handle);
          this.replyEntry(req, this.entryPath(parent, path), info);
        });
      },
      unlink: (req: Ptr, parent: number, name: Ptr) =>
        this.answer(req, 'unlink', `inode ${parent}`, async () => {
          const [path] = await this.atPath('unlink', this.child(parent, name, 'unlink'), (p) => fs.deleteFile(p), false);
          this.inodes.remove(this.entryPath(parent, path));
          lib.replyErr(req, 0);
        }),
      rmdir: (req: Ptr, parent: number, name: Ptr) =>
        this.answer(req, 'rmdir', `inode ${parent}`, async () => {
          const [path] = await this.atPath('rmdir', this.child(parent, name, 'rmdir'), (p) => fs.deleteDirectory(p), false);
          this.inodes.remove(this.entryPath(parent, path));
          lib.replyErr(req, 0);
        }),
      rename: (req: Ptr, parent: number, name: Ptr, newParent: number, newName: Ptr, flags: number) =>
        this.answer(req, 'rename', `inode ${parent}`, async () => {
          const [fromAt, toAt] = [this.child(parent, name, 'rename'), this.child(newParent, newName, 'rename')];
          const names = () => [fromAt(), toAt()] as const;
          const [[from, to]] = await this.atPath('rename', names, ([f, t]) => fs.renameOrMoveFile(f, t, flags), false);
          const [a, b] = [this.entryPath(parent, from), this.entryPath(newParent, to)];
          if (flags & RENAME_EXCHANGE) this.inodes.exchange(a, b);
          else this.inodes.rename(a, b);
          lib.replyErr(req, 0);
        }),
      link: (req: Ptr) => lib.replyErr(req, E.EPERM), // S3 has no hard links: link(2) documents EPERM for that
      symlink: (req: Ptr, link: Ptr, parent: number, name: Ptr) => {
        const caller = this.caller(req);
        this.answer(req, 'symlink', `inode ${parent}`, async () => {
          const target = this.name(link, 'symlink');
          const [path, info] = await this.atPath('symlink', this.child(parent, name, 'symlink'), (p) => fs.createSymlink(p, target, caller), false);
          this.replyEntry(req, this.entryPath(parent, path), info);
        });
      },
      readlink: (req: Ptr, ino: number) =>
        this.answer(req, 'readlink', `inode ${ino}`, async () => {
          const [, target] = await this.atPath('readlink', () => this.pathOf(ino, 'readlink'), (p) => fs.readSymlink(p), true);
          lib.replyReadlink(req, target);
        }),
      fallocate: (req: Ptr, ino: number, mode: number, offset: number, length: number, fi: Ptr) => {
        const handle = this.fh(fi);
        this.answer(req, 'fallocate', `inode ${ino}`, async () => {
          await fs.allocateSpace(handle, mode, Number(offset), Number(length));
          lib.replyErr(req, 0);
        });
      },
      lseek: (req: Ptr, ino: number, off: number, whence: number, fi: Ptr) => {
        const handle = this.fh(fi);
        this.answer(req, 'lseek', `inode ${ino}`, async () => {
          lib.replyLseek(req, await fs.seekData(handle, Number(off), whence));
        });
      },
      open: (req: Ptr, ino: number, fi: Ptr) => {
        const flags = readI32(fi, FILE_INFO.flags);
        const kill = this.takeKill();
        this.answer(req, 'open', `inode ${ino}`, async () => {
          if (kill) await this.killSuidGid(this.pathOf(ino, 'open'), kill, Number(ino));
          const stored = await this.pageStore?.hold(Number(ino), flags);
          let handle: number | undefined;
          try {
            [, handle] = await this.atPath('open', () => this.pathOf(ino, 'open'), (p) => fs.openFile(p, flags), false);
            this.opened(Number(ino), handle);
            const backingId = this.passthroughOpen(Number(ino), handle, flags);
            if (backingId > 0) lib.replyBuf(req, openOutBuffer(handle, FOPEN_PASSTHROUGH, backingId), 16);
            else lib.replyOpen(req, fileInfoBuffer(flags, handle, this.openBits(Number(ino), handle)));
          } finally {
            stored?.(handle);
          }
        });
      },
      create: (req: Ptr, parent: number, name: Ptr, mode: number, fi: Ptr) => {
        const flags = readI32(fi, FILE_INFO.flags);
        const caller = this.caller(req);
        const kill = this.takeKill();
        this.answer(req, 'create', `inode ${parent}`, async () => {
          const at = this.child(parent, name, 'create');
          const path = at();
          // CREATE of a name that exists (O_TRUNC, the kernel's look-up having missed it): cleared as by OPEN.
          const existing = kill ? await this.clearedModeFor(path, kill).catch(() => undefined) : undefined;
          if (existing !== undefined) await fs.setFileAttributes(path, { mode: existing });
          const [made, { handle, info }] = await this.atPath('create', at, (p) => fs.createFile(p, mode, flags, caller), false);
          const ino = this.inodes.lookup(this.entryPath(parent, made), info.kind);
          this.opened(ino, handle);
          // A new file: no page of it was stored; its writer is counted before the reply lets it write.
          (await this.pageStore?.hold(ino, flags))?.(handle);
          const backingId = this.passthroughOpen(ino, handle, flags);
          if (backingId > 0) lib.replyBuf(req, createOutBuffer(ino, info, this.attrTimeout, handle, FOPEN_PASSTHROUGH, backingId), 144);
          else lib.replyCreate(req, entryBuffer(ino, info, this.attrTimeout), fileInfoBuffer(flags, handle, this.openBits(ino, handle)));
        });
      },
      read: (req: Ptr, ino: number, size: number, off: number, fi: Ptr) => {
        const handle = this.fh(fi);
        this.answer(req, 'read', `inode ${ino}`, async () => {
          // Large reads: libfuse reads the bytes from the vault's data file and replies on a worker thread.
          if (Number(size) >= FD_REPLY_MIN && fs.readFileInto) {
            // Exactly one reply: a request failed at its deadline must not be answered again by the tardy handler.
            let answered = false;
            const send = (fd: number, pos: number, len: number) => (answered ? Promise.resolve() : ((answered = true), this.replyFromFile(req, fd, pos, len)));
            try {
              if (await fs.readFileInto(handle, Number(off), Number(size), send)) {
                this.pageStore?.noteRead(handle, Number(off), Number(size));
                return;
              }
            } catch (err) {
              if (answered) return;
              answered = true;
              throw err;
            }
          }
          const data = await fs.readFile(handle, Number(off), Number(size));
          lib.replyBuf(req, data, data.length);
          this.pageStore?.afterRead(Number(ino), handle, Number(off), data.length, (o, l) => fs.readFile(handle, o, l));
        });
      },
      write: (req: Ptr, ino: number, buf: Ptr, size: number, off: number, fi: Ptr) => {
        // The buffer belongs to libfuse and is reused once this callback returns: copy it now.
        const data = copyIn(buf, Number(size));
        const handle = this.fh(fi);
        const kill = this.takeKill();
        this.answer(req, 'write', `inode ${ino}`, async () => {
          if (kill && this.orphanHandle(Number(ino)) === undefined) await this.killSuidGid(this.pathOf(ino, 'write'), kill, Number(ino), handle);
          lib.replyWrite(req, await fs.writeFile(handle, Number(off), data));
        });
      },
      flush: (req: Ptr, ino: number, fi: Ptr) => {
        const handle = this.fh(fi);
        this.answer(req, 'flush', `inode ${ino}`, async () => {
          await fs.cleanupFile(handle);
          lib.replyErr(req, 0);
        });
      },
      release: (req: Ptr, ino: number, fi: Ptr) => {
        const handle = this.fh(fi);
        this.answer(req, 'release', `inode ${ino}`, async () => {
          try {
            await fs.closeFile(handle);
          } finally {
            this.released(Number(ino), handle);
            this.passthroughReleased(Number(ino), handle);
            this.pageStore?.released(Number(ino), handle);
          }
          lib.replyErr(req, 0);
        });
      },
      fsync: (req: Ptr, ino: number, datasync: number, fi: Ptr) => {
        const handle = this.fh(fi);
        this.answer(req, 'fsync', `inode ${ino}`, async () => {
          await fs.flushFile(handle, datasync !== 0);
          lib.replyErr(req, 0);
        });
      },
      opendir: (req: Ptr, ino: number, fi: Ptr) => {
        const flags = readI32(fi, FILE_INFO.flags);
        this.answer(req, 'opendir', `inode ${ino}`, async () => {
          // A directory removed while a process is in it opens empty (the kernel then ends its listing at once).
          if (this.inodes.removedDir(Number(ino))) {
            const dh = this.nextDir++;
            this.dirs.set(dh, { path: '', listed: [], self: Number(ino), parent: ROOT_INO });
            return lib.replyOpen(req, fileInfoBuffer(flags, dh));
          }
          const [path, listed] = await this.atPath('opendir', () => this.pathOf(ino, 'opendir'), (p): Promise<DirEntry[]> => fs.enumerateDirectory(p), true);
          const parent = path === '/' ? ROOT_INO : this.inodes.peek(path.slice(0, path.lastIndexOf('/')) || '/');
          const dh = this.nextDir++;
          this.dirs.set(dh, { path, listed, self: Number(ino), parent });
          lib.replyOpen(req, fileInfoBuffer(flags, dh));
        });
      },
      readdir: (req: Ptr, _ino: number, size: number, off: number, fi: Ptr) => this.replyDir(req, Number(size), Number(off), fi, false),
      readdirplus: (req: Ptr, _ino: number, size: number, off: number, fi: Ptr) => this.replyDir(req, Number(size), Number(off), fi, true),
      releasedir: (req: Ptr, _ino: number, fi: Ptr) => {
        this.dirs.delete(this.fh(fi));
        lib.replyErr(req, 0);
      },
      fsyncdir: (req: Ptr) => lib.replyErr(req, 0),
      setxattr: (req: Ptr, ino: number, namePtr: Ptr, value: Ptr, size: number, flags: number) => {
        const data = copyIn(value, Number(size));
        this.answer(req, 'setxattr', `inode ${ino}`, async () => {
          const name = this.name(namePtr, 'setxattr');
          await this.atPath('setxattr', () => this.pathOf(ino, 'setxattr'), async (path) => {
            const exists = (await fs.getExtendedAttribute(path, name)) !== null;
            if (flags & XATTR_CREATE && exists) throw new FsError(E.EEXIST, 'setxattr', path);
            if (flags & XATTR_REPLACE && !exists) throw new FsError(E.ENODATA, 'setxattr', path);
            await fs.setExtendedAttribute(path, name, data);
          }, false);
          lib.replyErr(req, 0);
        });
      },
      getxattr: (req: Ptr, ino: number, namePtr: Ptr, size: number) => {
        const name = decodeName(namePtr) ?? '';
        // Only user.* names are stored. Others (security.*, system.posix_acl_*) are "not supported", answered at
        // once: the kernel asks for security.capability on every write, and `ls -l` asks for security.selinux and
        // the ACL of every entry unless told the filesystem has none (EOPNOTSUPP, remembered per device; ENODATA is
        // asked again for each file — two round trips per entry of a warm `ls -l`).
        if (!name.startsWith('user.')) {
          lib.replyErr(req, E.ENOTSUP);
          return;
        }
        this.answer(req, 'getxattr', `inode ${ino}`, async () => {
          const [, value] = await this.atPath('getxattr', () => this.pathOf(ino, 'getxattr'), (p) => fs.getExtendedAttribute(p, name), true);
          if (value === null) throw new FsError(E.ENODATA, 'getxattr', name);
          this.replySized(req, value, Number(size));
        });
      },
      listxattr: (req: Ptr, ino: number, size: number) =>
        this.answer(req, 'listxattr', `inode ${ino}`, async () => {
          const [, names] = await this.atPath('listxattr', () => this.pathOf(ino, 'listxattr'), (p) => fs.listExtendedAttributes(p), true);
          this.replySized(req, Buffer.from(names.map((n) => `${n}\0`).join('')), Number(size));
        }),
      removexattr: (req: Ptr, ino: number, namePtr: Ptr) =>
        this.answer(req, 'removexattr', `inode ${ino}`, async () => {
          const name = this.name(namePtr, 'removexattr');
          const [, removed] = await this.atPath('removexattr', () => this.pathOf(ino, 'removexattr'), (p) => fs.removeExtendedAttribute(p, name), false);
          if (!removed) throw new FsError(E.ENODATA, 'removexattr', name);
          lib.replyErr(req, 0);
        }),
      statfs: (req: Ptr) => {
        const { total, free, nameMax } = fs.getVolumeSize();
        lib.replyStatfs(req, statvfsBuffer(total, free, 4096, nameMax));
      },
    };
  }
}

/** A process's supplementary groups (/proc/PID/status), none if it is gone. */
function supplementaryGroups(pid: number): number[] {
  try {
    const line = /^Groups:(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '';
    return line.trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Run a command to its end: its exit code (127: it could not start) and what it wrote on stderr. */
function runCommand(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', (err) => resolve({ code: 127, stderr: err.message }));
    child.on('close', (code) => resolve({ code: code ?? 1, stderr }));
  });
}

