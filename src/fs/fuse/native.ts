/**
 * The only file that talks to libfuse3 (low-level API, FUSE_USE_VERSION 34) through koffi. Pointers are
 * BigInts (koffi 3); fuse_req_t stays opaque. Struct layouts are x86-64 / libfuse 3.14 (spec/fuse-binding.md),
 * encoded by structs.ts and checked against the C headers by test/integration/fuse-layout.test.ts.
 */
import { existsSync } from 'node:fs';
import koffi, { type LibraryHandle } from 'koffi';

export type Ptr = bigint;

/** The 44 operations of struct fuse_lowlevel_ops, in header order. */
export const OP_NAMES = [
  'init', 'destroy', 'lookup', 'forget', 'getattr', 'setattr', 'readlink', 'mknod', 'mkdir', 'unlink', 'rmdir', 'symlink', 'rename', 'link',
  'open', 'read', 'write', 'flush', 'release', 'fsync', 'opendir', 'readdir', 'releasedir', 'fsyncdir', 'statfs', 'setxattr', 'getxattr',
  'listxattr', 'removexattr', 'access', 'create', 'getlk', 'setlk', 'bmap', 'ioctl', 'poll', 'write_buf', 'retrieve_reply', 'forget_multi',
  'flock', 'fallocate', 'readdirplus', 'copy_file_range', 'lseek',
] as const;
export type OpName = (typeof OP_NAMES)[number];
export const OPS_SIZE = OP_NAMES.length * 8; // 352

/** C prototypes of the operations s3vault implements (the others stay NULL: libfuse answers ENOSYS). */
export const OP_PROTOS: Partial<Record<OpName, string>> = {
  init: 'void fuse_op_init(void *userdata, void *conn)',
  destroy: 'void fuse_op_destroy(void *userdata)',
  lookup: 'void fuse_op_lookup(void *req, uint64_t parent, void *name)',
  forget: 'void fuse_op_forget(void *req, uint64_t ino, uint64_t nlookup)',
  getattr: 'void fuse_op_getattr(void *req, uint64_t ino, void *fi)',
  readlink: 'void fuse_op_readlink(void *req, uint64_t ino)',
  symlink: 'void fuse_op_symlink(void *req, void *link, uint64_t parent, void *name)',
  setattr: 'void fuse_op_setattr(void *req, uint64_t ino, void *attr, int to_set, void *fi)',
  mknod: 'void fuse_op_mknod(void *req, uint64_t parent, void *name, uint32_t mode, uint64_t rdev)',
  mkdir: 'void fuse_op_mkdir(void *req, uint64_t parent, void *name, uint32_t mode)',
  unlink: 'void fuse_op_unlink(void *req, uint64_t parent, void *name)',
  rmdir: 'void fuse_op_rmdir(void *req, uint64_t parent, void *name)',
  rename: 'void fuse_op_rename(void *req, uint64_t parent, void *name, uint64_t newparent, void *newname, uint32_t flags)',
  link: 'void fuse_op_link(void *req, uint64_t ino, uint64_t newparent, void *newname)',
  open: 'void fuse_op_open(void *req, uint64_t ino, void *fi)',
  read: 'void fuse_op_read(void *req, uint64_t ino, size_t size, int64_t off, void *fi)',
  write: 'void fuse_op_write(void *req, uint64_t ino, void *buf, size_t size, int64_t off, void *fi)',
  flush: 'void fuse_op_flush(void *req, uint64_t ino, void *fi)',
  release: 'void fuse_op_release(void *req, uint64_t ino, void *fi)',
  fsync: 'void fuse_op_fsync(void *req, uint64_t ino, int datasync, void *fi)',
  opendir: 'void fuse_op_opendir(void *req, uint64_t ino, void *fi)',
  readdir: 'void fuse_op_readdir(void *req, uint64_t ino, size_t size, int64_t off, void *fi)',
  readdirplus: 'void fuse_op_readdirplus(void *req, uint64_t ino, size_t size, int64_t off, void *fi)',
  releasedir: 'void fuse_op_releasedir(void *req, uint64_t ino, void *fi)',
  fsyncdir: 'void fuse_op_fsyncdir(void *req, uint64_t ino, int datasync, void *fi)',
  statfs: 'void fuse_op_statfs(void *req, uint64_t ino)',
  create: 'void fuse_op_create(void *req, uint64_t parent, void *name, uint32_t mode, void *fi)',
  setxattr: 'void fuse_op_setxattr(void *req, uint64_t ino, void *name, void *value, size_t size, int flags)',
  getxattr: 'void fuse_op_getxattr(void *req, uint64_t ino, void *name, size_t size)',
  listxattr: 'void fuse_op_listxattr(void *req, uint64_t ino, size_t size)',
  removexattr: 'void fuse_op_removexattr(void *req, uint64_t ino, void *name)',
  fallocate: 'void fuse_op_fallocate(void *req, uint64_t ino, int mode, int64_t offset, int64_t length, void *fi)',
  lseek: 'void fuse_op_lseek(void *req, uint64_t ino, int64_t off, int whence, void *fi)',
};

export class FuseUnavailableError extends Error {}

const FuseArgs = koffi.struct('s3vault_fuse_args', { argc: 'int', argv: 'char **', allocated: 'int' });
// struct fuse_buf and struct fuse_bufvec with one buffer (libfuse 3), for bytes handed over from memory.
const FuseBuf = koffi.struct('s3v_fuse_buf', { size: 'size_t', flags: 'int', mem: 'void *', fd: 'int', pos: 'int64_t' });
koffi.struct('s3v_fuse_bufvec', { count: 'size_t', idx: 'size_t', off: 'size_t', buf: koffi.array(FuseBuf, 1) });

function bind(lib: LibraryHandle) {
  return {
    sessionNew: lib.func('void *fuse_session_new(s3vault_fuse_args *args, const void *ops, size_t op_size, void *userdata)'),
    sessionMount: lib.func('int fuse_session_mount(void *se, const char *mountpoint)'),
    sessionUnmount: lib.func('void fuse_session_unmount(void *se)'),
    sessionDestroy: lib.func('void fuse_session_destroy(void *se)'),
    sessionExit: lib.func('void fuse_session_exit(void *se)'),
    sessionFd: lib.func('int fuse_session_fd(void *se)'),
    sessionCustomIo: lib.func('int fuse_session_custom_io(void *se, const void *io, int fd)'),
    receiveBuf: lib.func('int fuse_session_receive_buf(void *se, void *buf)'),
    processBuf: lib.func('void fuse_session_process_buf(void *se, const void *buf)'),
    loopMt: lib.func('int fuse_session_loop_mt_312(void *se, void *config)'),
    loopCfgCreate: lib.func('void *fuse_loop_cfg_create()'),
    loopCfgSetMaxThreads: lib.func('void fuse_loop_cfg_set_max_threads(void *config, unsigned int value)'),
    loopCfgSetIdleThreads: lib.func('void fuse_loop_cfg_set_idle_threads(void *config, unsigned int value)'),
    replyErr: lib.func('int fuse_reply_err(void *req, int err)'),
    replyNone: lib.func('void fuse_reply_none(void *req)'),
    replyEntry: lib.func('int fuse_reply_entry(void *req, const void *e)'),
    replyCreate: lib.func('int fuse_reply_create(void *req, const void *e, const void *fi)'),
    replyAttr: lib.func('int fuse_reply_attr(void *req, const void *attr, double timeout)'),
    replyOpen: lib.func('int fuse_reply_open(void *req, const void *fi)'),
    replyWrite: lib.func('int fuse_reply_write(void *req, size_t count)'),
    replyBuf: lib.func('int fuse_reply_buf(void *req, const void *buf, size_t size)'),
    replyData: lib.func('int fuse_reply_data(void *req, void *bufv, int flags)'),
    replyStatfs: lib.func('int fuse_reply_statfs(void *req, const void *stbuf)'),
    replyXattr: lib.func('int fuse_reply_xattr(void *req, size_t count)'),
    // The two below: replies are encoded in structs.ts (DirentReply); the layout test compares with these.
    addDirentry: lib.func('size_t fuse_add_direntry(void *req, void *buf, size_t bufsize, const char *name, const void *stbuf, int64_t off)'),
    addDirentryPlus: lib.func('size_t fuse_add_direntry_plus(void *req, void *buf, size_t bufsize, const char *name, const void *e, int64_t off)'),
    reqCtx: lib.func('void *fuse_req_ctx(void *req)'),
    replyReadlink: lib.func('int fuse_reply_readlink(void *req, const char *link)'),
    replyLseek: lib.func('int fuse_reply_lseek(void *req, int64_t off)'),
    // Kernel cache invalidation: may block on the kernel's inode locks, so only ever called with .async.
    invalInode: lib.func('int fuse_lowlevel_notify_inval_inode(void *se, uint64_t ino, int64_t off, int64_t len)'),
    invalEntry: lib.func('int fuse_lowlevel_notify_inval_entry(void *se, uint64_t parent, const char *name, size_t namelen)'),
    // Bytes into the kernel's page cache of an inode (PageStore): takes page locks, so only ever called with .async.
    notifyStore: lib.func('int fuse_lowlevel_notify_store(void *se, uint64_t ino, int64_t offset, s3v_fuse_bufvec *bufv, int flags)'),
  };
}

export type FuseLib = ReturnType<typeof bind> & { makeArgs(argv: string[]): unknown };

let loaded: FuseLib | undefined;

/** Load libfuse3 once; a missing library or /dev/fuse is one clear FuseUnavailableError. */
export function loadFuse(): FuseLib {
  if (loaded) return loaded;
  if (!existsSync('/dev/fuse')) throw new FuseUnavailableError('FUSE is not available: /dev/fuse is missing (load the fuse module, or give the container --device /dev/fuse)');
  let lib: LibraryHandle;
  try {
    lib = koffi.load('libfuse3.so.3');
  } catch (err) {
    throw new FuseUnavailableError(`FUSE is not available: cannot load libfuse3.so.3 (install the Debian packages fuse3 and libfuse3-3): ${(err as Error).message}`);
  }
  loaded = { ...bind(lib), makeArgs: (argv: string[]) => ({ argc: argv.length, argv, allocated: 0 }) };
  void FuseArgs;
  return loaded;
}

/** Register a JS function as a C callback of the given prototype; keep the result referenced while mounted. */
export function registerCallback(proto: string, fn: (...args: never[]) => void): { ptr: Ptr; release(): void } {
  const type = koffi.proto(proto);
  const cb = koffi.register(fn as (...args: unknown[]) => unknown, koffi.pointer(type));
  return { ptr: cb, release: () => koffi.unregister(cb) };
}

/** The libc functions the binding calls itself (not through libfuse), loaded on first use. */
export interface Libc {
  strlen: (p: Ptr) => number | bigint;
  dlsym: (handle: null, name: string) => Ptr;
  writev: (fd: number, iov: Ptr, count: number) => number | bigint;
  ioctl: (fd: number, request: number, ...args: unknown[]) => number;
  free: (p: Ptr) => void;
  dup: (fd: number) => number;
  close: (fd: number) => number;
  /** memmove(b, b, 0) returns b: the address of a Buffer's bytes. */
  memmove: (dest: Buffer, src: Buffer, n: number) => Ptr;
}

let libcFns: Libc | undefined;
export function libc(): Libc {
  if (libcFns) return libcFns;
  const lib = koffi.load('libc.so.6');
  libcFns = {
    strlen: lib.func('size_t strlen(void *s)') as Libc['strlen'],
    dlsym: lib.func('void *dlsym(void *handle, const char *name)') as Libc['dlsym'],
    writev: lib.func('int64_t writev(int fd, void *iov, int count)') as Libc['writev'],
    ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)') as Libc['ioctl'],
    free: lib.func('void free(void *p)') as Libc['free'],
    dup: lib.func('int dup(int fd)') as Libc['dup'],
    close: lib.func('int close(int fd)') as Libc['close'],
    memmove: lib.func('void *memmove(void *dest, const void *src, size_t n)') as Libc['memmove'],
  };
  return libcFns;
}

/** mallopt(3) parameters (malloc.h). */
const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;

/**
 * Fixed malloc thresholds for a mounted process. Each read reply from a vault file has libfuse malloc a buffer of
 * the read's size (up to 1 MiB) on a thread-pool thread, pread into it, send it and free it. With glibc's adaptive
 * thresholds such a buffer was sometimes mmapped, or its arena trimmed, at every reply, so that every page of every
 * reply was faulted in anew: a cold 1 GiB `cat` then took 266 000 page faults and 5.9 s of CPU instead of 11 000
 * and 2.0 s (one run in ten here; every run under `--cpu-prof`), at 5.1 s instead of 3.2 s. Allocations below 4 MiB
 * now always come from the arenas, and up to 64 MiB freed at an arena's top stays there for the next one.
 */
export function fixMallocThresholds(): void {
  try {
    const mallopt = koffi.load('libc.so.6').func('int mallopt(int param, int value)') as (param: number, value: number) => number;
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
  } catch {
    // Not glibc (no mallopt): its allocator has its own ways.
  }
}

/**
 * A name the kernel passed, as raw bytes decoded strictly: S3 keys are UTF-8, so a name that is not valid UTF-8
 * is refused (EILSEQ) rather than silently changed by a lossy decode.
 */
export function decodeName(ptr: Ptr): string | null {
  const n = Number(libc().strlen(ptr));
  if (n === 0) return '';
  try {
    return strictUtf8.decode(new Uint8Array(koffi.view(ptr, n)));
  } catch {
    return null;
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function copyIn(ptr: Ptr, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  if (size > 0) out.set(new Uint8Array(koffi.view(ptr, size)));
  return out;
}

export function readI32(ptr: Ptr, offset: number): number {
  return koffi.decode(ptr, offset, 'int32_t') as number;
}

export function readU32(ptr: Ptr, offset: number): number {
  return koffi.decode(ptr, offset, 'uint32_t') as number;
}

export function readI64(ptr: Ptr, offset: number): number {
  return Number(koffi.decode(ptr, offset, 'int64_t'));
}

export function writeU32(ptr: Ptr, offset: number, value: number): void {
  koffi.encode(ptr, offset, 'uint32_t', value);
}
