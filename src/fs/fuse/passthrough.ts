/**
 * FUSE passthrough (Linux ≥ 6.9): the kernel serves reads and writes of an open file straight from a backing file
 * — here the vault's data file — without a round trip through this process. libfuse 3.14 (Debian 12) predates
 * it, so two things are done by hand:
 *  - INIT: the session's first request is received and processed on the main thread with a custom writev that
 *    adds FUSE_PASSTHROUGH (flags2 bit 5) and max_stack_depth to libfuse's reply; then libc's own read/writev
 *    take over, so no later request pays for it.
 *  - OPEN: the reply (struct fuse_open_out) is written with fuse_reply_buf, carrying FOPEN_PASSTHROUGH and the
 *    backing id registered by the FUSE_DEV_IOC_BACKING_OPEN ioctl.
 * Layouts are the kernel's fuse.h (protocol 7.40).
 */
import koffi from 'koffi';
import type { Logger } from '../../log.js';
import { libc, registerCallback, type FuseLib, type Ptr } from './native.js';

const FUSE_INIT = 26;
const FUSE_INIT_EXT = 1 << 30;
const FUSE_WRITEBACK_CACHE = 1 << 16;
/** FUSE_PASSTHROUGH is 1 << 37: bit 5 of flags2. */
const FLAGS2_PASSTHROUGH = 1 << 5;
/** fuse_in_header is 40 bytes; fuse_init_in follows: major, minor, max_readahead, flags, flags2. */
const IN_FLAGS = 40 + 12;
const IN_FLAGS2 = 40 + 16;
/** fuse_init_out: flags @12, flags2 @32, max_stack_depth @36. */
const OUT_FLAGS = 12;
const OUT_FLAGS2 = 32;
const OUT_MAX_STACK_DEPTH = 36;
/** _IOW(229, 1, struct fuse_backing_map) and _IOW(229, 2, uint32_t). */
const FUSE_DEV_IOC_BACKING_OPEN = 0x4010e501;
const FUSE_DEV_IOC_BACKING_CLOSE = 0x4004e502;
export const FOPEN_PASSTHROUGH = 1 << 7;

/** fuse_custom_io: writev, read, splice_receive, splice_send. */
function customIo(writev: Ptr, read: Ptr): Buffer {
  const io = Buffer.alloc(32);
  io.writeBigUInt64LE(writev, 0);
  io.writeBigUInt64LE(read, 8);
  return io;
}

/**
 * Receive and answer the session's INIT here, asking for passthrough when the kernel offers it. Call right after
 * fuse_session_mount, before the request loop starts. Returns whether the kernel was told passthrough is wanted
 * (it may still refuse: the first backing open then fails and the caller stops trying).
 */
export function negotiatePassthrough(lib: FuseLib, se: Ptr, log: Logger): boolean {
  const c = libc();
  const fd = lib.sessionFd(se);
  const nativeWritev = c.dlsym(null, 'writev');
  const nativeRead = c.dlsym(null, 'read');
  let offered = false;
  let patched = false;
  const cb = registerCallback('int64_t s3vault_init_writev(int fd, void *iov, int count, void *userdata)', ((wfd: number, iov: Ptr, count: number) => {
    // iov[0]: fuse_out_header (len, error, unique); iov[1]: fuse_init_out.
    if (offered && !patched && count >= 2) {
      const vec = Buffer.from(koffi.view(iov, count * 16) as ArrayBuffer);
      const out = vec.readBigUInt64LE(16);
      const outLen = Number(vec.readBigUInt64LE(24));
      if (out && outLen >= OUT_MAX_STACK_DEPTH + 4) {
        const flags = koffi.decode(out, OUT_FLAGS, 'uint32_t') as number;
        if (flags & FUSE_INIT_EXT && !(flags & FUSE_WRITEBACK_CACHE)) {
          const flags2 = koffi.decode(out, OUT_FLAGS2, 'uint32_t') as number;
          koffi.encode(out, OUT_FLAGS2, 'uint32_t', (flags2 | FLAGS2_PASSTHROUGH) >>> 0);
          // Backing files live on an ordinary filesystem (stack depth 0): one level above it is enough.
          koffi.encode(out, OUT_MAX_STACK_DEPTH, 'uint32_t', 1);
          patched = true;
        }
      }
    }
    return c.writev(wfd, iov, count);
  }) as never);
  try {
    if (lib.sessionCustomIo(se, customIo(cb.ptr, nativeRead), fd) !== 0) return false;
    const buf = Buffer.alloc(40); // struct fuse_buf: size, flags, mem, fd, pos
    const n = lib.receiveBuf(se, buf);
    if (n <= 0) throw new Error(`FUSE: no INIT request from the kernel (${n})`);
    const mem = buf.readBigUInt64LE(16);
    const opcode = koffi.decode(mem, 4, 'uint32_t') as number;
    if (opcode === FUSE_INIT) {
      const flags = koffi.decode(mem, IN_FLAGS, 'uint32_t') as number;
      const flags2 = koffi.decode(mem, IN_FLAGS2, 'uint32_t') as number;
      offered = (flags & FUSE_INIT_EXT) !== 0 && (flags2 & FLAGS2_PASSTHROUGH) !== 0;
    }
    lib.processBuf(se, buf);
    c.free(mem);
  } finally {
    // From here on the loop's threads talk to the kernel through libc directly.
    lib.sessionCustomIo(se, customIo(nativeWritev, nativeRead), fd);
    cb.release();
  }
  log.debug({ offered, patched }, 'FUSE passthrough negotiation');
  return patched;
}

/** Backing files registered with the kernel, one id per open data file descriptor. */
export class BackingFiles {
  private readonly c = libc();
  private readonly fuseFd: number;

  constructor(lib: FuseLib, se: Ptr) {
    this.fuseFd = lib.sessionFd(se);
  }

  /** The backing id for a file descriptor, or a negative errno. */
  open(fd: number): number {
    const map = Buffer.alloc(16); // struct fuse_backing_map: fd, flags, padding
    map.writeInt32LE(fd, 0);
    const id = this.c.ioctl(this.fuseFd, FUSE_DEV_IOC_BACKING_OPEN, 'void *', map);
    return id > 0 ? id : -(koffi.errno() || 1);
  }

  close(id: number): void {
    const arg = Buffer.alloc(4);
    arg.writeUInt32LE(id, 0);
    this.c.ioctl(this.fuseFd, FUSE_DEV_IOC_BACKING_CLOSE, 'void *', arg);
  }
}

/** struct fuse_open_out: fh, open_flags, backing_id. */
export function openOutBuffer(fh: number, openFlags: number, backingId: number): Buffer {
  const buf = Buffer.alloc(16);
  buf.writeBigUInt64LE(BigInt(fh), 0);
  buf.writeUInt32LE(openFlags >>> 0, 8);
  buf.writeInt32LE(backingId, 12);
  return buf;
}
