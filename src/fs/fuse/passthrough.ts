/**
 * FUSE passthrough (Linux ≥ 6.9): the kernel serves reads and writes of an open file straight from a backing file
 * — here the vault's data file — without a round trip through this process. libfuse 3.14 (Debian 12) predates
 * it, so two things are done by hand:
 *  - INIT: the reply asks for FUSE_PASSTHROUGH (init.ts);
 *  - OPEN: the reply (struct fuse_open_out) is written with fuse_reply_buf, carrying FOPEN_PASSTHROUGH and the
 *    backing id registered by the FUSE_DEV_IOC_BACKING_OPEN ioctl.
 * Layouts are the kernel's fuse.h (protocol 7.40).
 */
import koffi from 'koffi';
import { libc, type FuseLib, type Ptr } from './native.js';

/** _IOW(229, 1, struct fuse_backing_map) and _IOW(229, 2, uint32_t). */
const FUSE_DEV_IOC_BACKING_OPEN = 0x4010e501;
const FUSE_DEV_IOC_BACKING_CLOSE = 0x4004e502;
export const FOPEN_PASSTHROUGH = 1 << 7;

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
    // Synchronous: through koffi's thread pool (.async) the call itself cost the main thread more than the ioctl
    // (336 against 140 ms over a git clone onto the mount, in CPU profiles).
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
