/**
 * The session's INIT, answered here rather than by libfuse alone: libfuse 3.14 (Debian 12) builds the reply's
 * flags from capabilities it knows, and two the kernel offers are newer than it:
 *  - FUSE_PASSTHROUGH (flags2 bit 5, with max_stack_depth): see passthrough.ts.
 *  - FUSE_HANDLE_KILLPRIV_V2 (flags bit 28): this process, not the kernel, clears the set-user-ID and set-group-ID
 *    bits when a file is written, truncated or chowned, told which requests must by flags in them (killFlag).
 *    The kernel then marks the superblock SB_NOSEC, and a file once checked for security.capability is not asked
 *    again for every write(2): without it each write costs a GETXATTR round trip first (1 024 for a 1 GiB dd of
 *    1 MiB writes; 17 000 of the 68 600 requests of a `tar x` of 5 000 files), and each chown a GETATTR too.
 * How: the first request is received and processed on the main thread with a custom writev that adds those bits
 * to libfuse's reply; then libc's own read/writev take over, so no later request pays for it.
 * Layouts are the kernel's fuse.h (protocol 7.40).
 */
import koffi from 'koffi';
import type { Logger } from '../../log.js';
import { libc, registerCallback, type FuseLib, type Ptr } from './native.js';

const FUSE_INIT = 26;
const FUSE_INIT_EXT = 1 << 30;
const FUSE_WRITEBACK_CACHE = 1 << 16;
const FUSE_HANDLE_KILLPRIV_V2 = 1 << 28;
/** FUSE_PASSTHROUGH is 1 << 37: bit 5 of flags2. */
const FLAGS2_PASSTHROUGH = 1 << 5;
/** fuse_in_header is 40 bytes; fuse_init_in follows: major, minor, max_readahead, flags, flags2. */
const IN_FLAGS = 40 + 12;
const IN_FLAGS2 = 40 + 16;
/** fuse_init_out: flags @12, flags2 @32, max_stack_depth @36. */
const OUT_FLAGS = 12;
const OUT_FLAGS2 = 32;
const OUT_MAX_STACK_DEPTH = 36;

export interface InitWants {
  passthrough: boolean;
  killPrivV2: boolean;
}

/** fuse_custom_io: writev, read, splice_receive, splice_send. */
function customIo(writev: Ptr, read: Ptr): Buffer {
  const io = Buffer.alloc(32);
  io.writeBigUInt64LE(writev, 0);
  io.writeBigUInt64LE(read, 8);
  return io;
}

/**
 * Receive and answer the session's INIT here, asking for what is wanted of what the kernel offers. Call right
 * after fuse_session_mount, before the request loop starts. Returns what the kernel was told (passthrough may
 * still be refused: the first backing open then fails and the caller stops trying).
 */
export function negotiateInit(lib: FuseLib, se: Ptr, want: InitWants, log: Logger): InitWants {
  const c = libc();
  const fd = lib.sessionFd(se);
  const nativeWritev = c.dlsym(null, 'writev');
  const nativeRead = c.dlsym(null, 'read');
  const offered: InitWants = { passthrough: false, killPrivV2: false };
  const told: InitWants = { passthrough: false, killPrivV2: false };
  let done = false;
  const cb = registerCallback('int64_t s3vault_init_writev(int fd, void *iov, int count, void *userdata)', ((wfd: number, iov: Ptr, count: number) => {
    // iov[0]: fuse_out_header (len, error, unique); iov[1]: fuse_init_out.
    if (!done && count >= 2 && (offered.passthrough || offered.killPrivV2)) {
      done = true;
      const vec = Buffer.from(koffi.view(iov, count * 16) as ArrayBuffer);
      const out = vec.readBigUInt64LE(16);
      const outLen = Number(vec.readBigUInt64LE(24));
      if (out && outLen >= OUT_MAX_STACK_DEPTH + 4) {
        const flags = koffi.decode(out, OUT_FLAGS, 'uint32_t') as number;
        if (offered.killPrivV2) {
          koffi.encode(out, OUT_FLAGS, 'uint32_t', (flags | FUSE_HANDLE_KILLPRIV_V2) >>> 0);
          told.killPrivV2 = true;
        }
        // The kernel refuses passthrough beside its writeback cache.
        if (offered.passthrough && flags & FUSE_INIT_EXT && !(flags & FUSE_WRITEBACK_CACHE)) {
          const flags2 = koffi.decode(out, OUT_FLAGS2, 'uint32_t') as number;
          koffi.encode(out, OUT_FLAGS2, 'uint32_t', (flags2 | FLAGS2_PASSTHROUGH) >>> 0);
          // Backing files live on an ordinary filesystem (stack depth 0): one level above it is enough.
          koffi.encode(out, OUT_MAX_STACK_DEPTH, 'uint32_t', 1);
          told.passthrough = true;
        }
      }
    }
    return c.writev(wfd, iov, count);
  }) as never);
  try {
    if (lib.sessionCustomIo(se, customIo(cb.ptr, nativeRead), fd) !== 0) return told;
    const buf = Buffer.alloc(40); // struct fuse_buf: size, flags, mem, fd, pos
    const n = lib.receiveBuf(se, buf);
    if (n <= 0) throw new Error(`FUSE: no INIT request from the kernel (${n})`);
    const mem = buf.readBigUInt64LE(16);
    const opcode = koffi.decode(mem, 4, 'uint32_t') as number;
    if (opcode === FUSE_INIT) {
      const flags = koffi.decode(mem, IN_FLAGS, 'uint32_t') as number;
      const flags2 = koffi.decode(mem, IN_FLAGS2, 'uint32_t') as number;
      offered.passthrough = want.passthrough && (flags & FUSE_INIT_EXT) !== 0 && (flags2 & FLAGS2_PASSTHROUGH) !== 0;
      offered.killPrivV2 = want.killPrivV2 && (flags & FUSE_HANDLE_KILLPRIV_V2) !== 0;
    }
    lib.processBuf(se, buf);
    c.free(mem);
  } finally {
    // From here on the loop talks to the kernel through libc directly.
    lib.sessionCustomIo(se, customIo(nativeWritev, nativeRead), fd);
    cb.release();
  }
  log.debug({ offered, told }, 'FUSE INIT negotiation');
  return told;
}

const FUSE_SETATTR = 4;
const FUSE_OPEN = 14;
const FUSE_WRITE = 16;
const FUSE_CREATE = 35;
/** fuse_setattr_in.valid (@40): FATTR_UID, FATTR_GID, FATTR_KILL_SUIDGID. */
const FATTR_UID = 1 << 1;
const FATTR_GID = 1 << 2;
const FATTR_KILL_SUIDGID = 1 << 11;
/** fuse_write_in.write_flags (@40 + 20). */
const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** fuse_open_in.open_flags (@40 + 4), fuse_create_in.open_flags (@40 + 12). */
const FUSE_OPEN_KILL_SUIDGID = 1 << 0;

/** A request that asks for the bits to be cleared, with its caller (from fuse_in_header: uid @24, gid @28, pid @32). */
export interface KillRequest {
  uid: number;
  gid: number;
  pid: number;
  /** A chown: its caller may have CAP_FSETID (the kernel flags the other requests only when it has not). */
  chown: boolean;
}

/**
 * Whether a request (as read from /dev/fuse) asks this process to clear the set-user-ID and set-group-ID bits
 * of its file, under FUSE_HANDLE_KILLPRIV_V2 — libfuse 3.14 drops these flags before the handlers see them:
 *  - WRITE, OPEN (O_TRUNC), CREATE (O_TRUNC), SETATTR of the size: flagged by the kernel when the caller lacks
 *    CAP_FSETID;
 *  - SETATTR of the owner or group: chown(2) clears them on Linux whoever calls it (see clearedMode);
 *  - SETATTR with nothing to set: the kernel's own file_remove_privs, before a write it serves without this
 *    process (FUSE passthrough) to a file that has one of the bits.
 */
export function killRequest(req: Buffer, length: number): KillRequest | null {
  if (length < 48) return null;
  let kill = false;
  let chown = false;
  switch (req.readUInt32LE(4)) {
    case FUSE_SETATTR: {
      const valid = req.readUInt32LE(40);
      chown = (valid & (FATTR_UID | FATTR_GID)) !== 0;
      kill = valid === 0 || chown || (valid & FATTR_KILL_SUIDGID) !== 0;
      break;
    }
    case FUSE_WRITE:
      kill = length >= 64 && (req.readUInt32LE(60) & FUSE_WRITE_KILL_SUIDGID) !== 0;
      break;
    case FUSE_OPEN:
      kill = (req.readUInt32LE(44) & FUSE_OPEN_KILL_SUIDGID) !== 0;
      break;
    case FUSE_CREATE:
      kill = length >= 56 && (req.readUInt32LE(52) & FUSE_OPEN_KILL_SUIDGID) !== 0;
      break;
  }
  return kill ? { uid: req.readUInt32LE(24), gid: req.readUInt32LE(28), pid: req.readUInt32LE(32), chown } : null;
}

/**
 * The mode a regular file keeps after such a request, by the kernel's rules (should_remove_suid and
 * setattr_should_drop_sgid): set-user-ID goes; set-group-ID goes where group execute is set, and otherwise
 * (where it marks mandatory locking) only when the caller is neither privileged nor in the file's group.
 * `inGroup` is asked only then.
 */
export function clearedMode(mode: number, fileGid: number, kill: KillRequest, inGroup: (gid: number) => boolean): number {
  let m = mode & ~0o4000;
  if (m & 0o2000 && (m & 0o010 || (!(kill.chown && kill.uid === 0) && !inGroup(fileGid)))) m &= ~0o2000;
  return m;
}
