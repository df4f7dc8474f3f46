/**
 * Encoders for the C structs replies carry (x86-64 glibc, libfuse 3.14; offsets from spec/fuse-binding.md and
 * checked against the headers in test/integration/fuse-layout.test.ts). Plain Buffers, no koffi structs:
 * they are built on every getattr/lookup, so they must be cheap.
 */
import type { FileInfo } from '../cbfs/events.js';

export const SIZEOF = { stat: 144, entry: 176, fileInfo: 40, statvfs: 112 } as const;
export const STAT = { ino: 8, nlink: 16, mode: 24, uid: 28, gid: 32, size: 48, blksize: 56, blocks: 64, atim: 72, mtim: 88, ctim: 104 } as const;
export const ENTRY = { ino: 0, generation: 8, attr: 16, attrTimeout: 160, entryTimeout: 168 } as const;
export const FILE_INFO = { flags: 0, bits: 4, fh: 16 } as const;
export const FI_BITS = { directIo: 1 << 1, keepCache: 1 << 2 } as const;
/** struct fuse_entry_out of the kernel's protocol (fuse.h): 40 bytes of node id and validity, then fuse_attr. */
const ENTRY_OUT = 128;
/** struct fuse_dirent without its name: ino, off, namelen, type. */
const DIRENT = 24;

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/** The I/O size programs such as cp use for this filesystem. */
const BLKSIZE = 1024 * 1024;

export function typeBits(info: Pick<FileInfo, 'kind'>): number {
  return info.kind === 'dir' ? S_IFDIR : info.kind === 'symlink' ? S_IFLNK : S_IFREG;
}

const TWO32 = 2 ** 32;

/** A 64-bit integer from a JS number (exact below 2^53): two 32-bit writes, no BigInt (per entry of a readdir). */
function write64(buf: Buffer, offset: number, v: number): void {
  const hi = Math.floor(v / TWO32);
  buf.writeUInt32LE(v - hi * TWO32, offset);
  buf.writeInt32LE(hi, offset + 4);
}

function writeTime(buf: Buffer, offset: number, ms: number): void {
  const sec = Math.floor(ms / 1000);
  write64(buf, offset, sec);
  write64(buf, offset + 8, Math.round((ms - sec * 1000) * 1e6));
}

export function encodeStat(buf: Buffer, base: number, ino: number, info: FileInfo): void {
  buf.fill(0, base, base + SIZEOF.stat);
  write64(buf, base + STAT.ino, ino);
  write64(buf, base + STAT.nlink, info.nlink ?? (info.kind === 'dir' ? 2 : 1));
  buf.writeUInt32LE(typeBits(info) | (info.mode & 0o7777), base + STAT.mode);
  buf.writeUInt32LE(info.uid, base + STAT.uid);
  buf.writeUInt32LE(info.gid, base + STAT.gid);
  write64(buf, base + STAT.size, info.size);
  write64(buf, base + STAT.blksize, BLKSIZE);
  write64(buf, base + STAT.blocks, Math.ceil(info.size / 512));
  writeTime(buf, base + STAT.atim, info.mtimeMs);
  writeTime(buf, base + STAT.mtim, info.mtimeMs);
  writeTime(buf, base + STAT.ctim, info.mtimeMs);
}

export function statBuffer(ino: number, info: FileInfo): Buffer {
  const buf = Buffer.alloc(SIZEOF.stat);
  encodeStat(buf, 0, ino, info);
  return buf;
}

export function entryBuffer(ino: number, info: FileInfo, timeout: number): Buffer {
  const buf = Buffer.alloc(SIZEOF.entry);
  encodeEntry(buf, ino, info, timeout);
  return buf;
}

/** struct fuse_entry_param into `buf` (SIZEOF.entry bytes, reused across a readdir's entries). */
export function encodeEntry(buf: Buffer, ino: number, info: FileInfo, timeout: number): void {
  write64(buf, ENTRY.ino, ino);
  write64(buf, ENTRY.generation, 0);
  encodeStat(buf, ENTRY.attr, ino, info);
  buf.writeDoubleLE(timeout, ENTRY.attrTimeout);
  buf.writeDoubleLE(timeout, ENTRY.entryTimeout);
}

/** A negative entry (ino 0): the kernel caches "does not exist" for `timeout` seconds. */
export function negativeEntryBuffer(timeout: number): Buffer {
  const buf = Buffer.alloc(SIZEOF.entry);
  buf.writeDoubleLE(timeout, ENTRY.entryTimeout);
  return buf;
}

export function fileInfoBuffer(flags: number, fh: number, bits = 0): Buffer {
  const buf = Buffer.alloc(SIZEOF.fileInfo);
  buf.writeInt32LE(flags, FILE_INFO.flags);
  buf.writeUInt32LE(bits, FILE_INFO.bits);
  buf.writeBigUInt64LE(BigInt(fh), FILE_INFO.fh);
  return buf;
}

export function statvfsBuffer(total: number, free: number, blockSize = 4096, nameMax = 255): Buffer {
  const buf = Buffer.alloc(SIZEOF.statvfs);
  const blocks = BigInt(Math.floor(total / blockSize));
  const freeBlocks = BigInt(Math.floor(free / blockSize));
  buf.writeBigUInt64LE(BigInt(blockSize), 0); // f_bsize
  buf.writeBigUInt64LE(BigInt(blockSize), 8); // f_frsize
  buf.writeBigUInt64LE(blocks, 16);
  buf.writeBigUInt64LE(freeBlocks, 24);
  buf.writeBigUInt64LE(freeBlocks, 32);
  buf.writeBigUInt64LE(1_000_000_000n, 40); // f_files
  buf.writeBigUInt64LE(1_000_000_000n, 48);
  buf.writeBigUInt64LE(1_000_000_000n, 56);
  buf.writeBigUInt64LE(BigInt(nameMax), 80); // f_namemax
  return buf;
}

/**
 * struct fuse_entry_out + struct fuse_open_out: the CREATE reply as the kernel reads it (libfuse's
 * fuse_reply_create cannot carry FOPEN_PASSTHROUGH and a backing id, so this one is written with fuse_reply_buf).
 */
export function createOutBuffer(ino: number, info: FileInfo, timeout: number, fh: number, openFlags: number, backingId: number): Buffer {
  const ab = new ArrayBuffer(ENTRY_OUT + 16);
  encodeEntryOut(new Uint32Array(ab), 0, ino, info, timeout);
  const buf = Buffer.from(ab);
  // struct fuse_open_out at 128
  buf.writeBigUInt64LE(BigInt(fh), 128);
  buf.writeUInt32LE(openFlags >>> 0, 136);
  buf.writeInt32LE(backingId, 140);
  return buf;
}

/** A 64-bit integer at 32-bit index `i` of a reply's 32-bit view (two's complement below zero). */
function set64(u: Uint32Array, i: number, v: number): void {
  const hi = Math.floor(v / TWO32);
  u[i] = (v - hi * TWO32) >>> 0;
  u[i + 1] = hi >>> 0;
}

/** struct fuse_entry_out at 32-bit index `i` (zeroed): node id, validity (as libfuse's calc_timeout_sec/nsec), fuse_attr. */
function encodeEntryOut(u: Uint32Array, i: number, ino: number, info: FileInfo, timeout: number): void {
  const vsec = Math.max(0, Math.floor(timeout));
  const vnsec = Math.min(999_999_999, Math.max(0, Math.floor((timeout - vsec) * 1e9)));
  set64(u, i, ino); // nodeid; generation 0
  set64(u, i + 4, vsec); // entry_valid
  set64(u, i + 6, vsec); // attr_valid
  u[i + 8] = vnsec;
  u[i + 9] = vnsec;
  const a = i + 10; // struct fuse_attr
  set64(u, a, ino);
  set64(u, a + 2, info.size);
  set64(u, a + 4, Math.ceil(info.size / 512));
  const sec = Math.floor(info.mtimeMs / 1000);
  const nsec = Math.round((info.mtimeMs - sec * 1000) * 1e6);
  set64(u, a + 6, sec); // atime
  set64(u, a + 8, sec); // mtime
  set64(u, a + 10, sec); // ctime
  u[a + 12] = nsec;
  u[a + 13] = nsec;
  u[a + 14] = nsec;
  u[a + 15] = typeBits(info) | (info.mode & 0o7777);
  u[a + 16] = info.nlink ?? (info.kind === 'dir' ? 2 : 1);
  u[a + 17] = info.uid;
  u[a + 18] = info.gid;
  u[a + 20] = BLKSIZE;
}

/** Bytes a readdir (plus: READDIRPLUS) entry of a name of `nameBytes` bytes takes: padded to 8, as the kernel reads them. */
function direntSize(nameBytes: number, plus: boolean): number {
  return (nameBytes + DIRENT + (plus ? ENTRY_OUT : 0) + 7) & ~7;
}

/**
 * A READDIR or READDIRPLUS reply being filled, entry by entry, in the kernel's layout: byte for byte what libfuse's
 * fuse_add_direntry(_plus) writes (test/integration/fuse-layout.test.ts compares them). Written here, through a
 * 32-bit view of the reply, rather than through libfuse: an FFI call and a Buffer method per field made a warm
 * `ls -l` of 10 000 entries cost about 30 ms of this process's time; this costs a third of it.
 */
export class DirentReply {
  readonly buf: Buffer;
  private readonly u32: Uint32Array;
  used = 0;

  /**
   * Every reply is written into one buffer, kept zeroed but for what the last reply used: a reply is filled and sent
   * at once (readdir is synchronous), so its buffer is valid until the next reply is made. A fresh zero-filled
   * buffer of the kernel's size per request (1 MiB for READDIRPLUS here) cost `rm -r` of 331 directories 1.4 s of
   * allocation and garbage collection.
   */
  private static scratch = new ArrayBuffer(0);
  private static dirty = 0;

  constructor(
    size: number,
    private readonly plus: boolean,
  ) {
    const bytes = (size + 7) & ~7; // 8-aligned; padding and unset fields must be zeros
    if (DirentReply.scratch.byteLength < bytes) DirentReply.scratch = new ArrayBuffer(bytes);
    else new Uint8Array(DirentReply.scratch, 0, DirentReply.dirty).fill(0);
    DirentReply.dirty = 0;
    this.buf = Buffer.from(DirentReply.scratch, 0, size);
    this.u32 = new Uint32Array(DirentReply.scratch, 0, bytes >>> 2);
  }

  /** The byte length of `name` when its entry fits in what is left of the reply, else -1. */
  room(name: string): number {
    const bytes = Buffer.byteLength(name);
    return this.used + direntSize(bytes, this.plus) <= this.buf.length ? bytes : -1;
  }

  /**
   * Appends the entry of `name` (`bytes` from room()). `attrs` gives it a node id (READDIRPLUS only): the kernel
   * then holds a reference, as after a LOOKUP; without, it looks the name up itself.
   */
  add(name: string, bytes: number, ino: number, mode: number, off: number, attrs?: { info: FileInfo; timeout: number }): void {
    let d = this.used >>> 2;
    if (this.plus) {
      if (attrs) encodeEntryOut(this.u32, d, ino, attrs.info, attrs.timeout);
      else {
        set64(this.u32, d + 10, ino); // attr.ino
        this.u32[d + 25] = mode; // attr.mode
      }
      d += ENTRY_OUT >>> 2;
    }
    set64(this.u32, d, ino);
    set64(this.u32, d + 2, off);
    this.u32[d + 4] = bytes;
    this.u32[d + 5] = (mode & 0o170000) >>> 12;
    this.buf.write(name, d * 4 + DIRENT, bytes, 'utf8');
    this.used += direntSize(bytes, this.plus);
    DirentReply.dirty = this.used;
  }
}
