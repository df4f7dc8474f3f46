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
  write64(buf, base + STAT.nlink, info.kind === 'dir' ? 2 : 1);
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

export function statvfsBuffer(total: number, free: number, blockSize = 4096): Buffer {
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
  buf.writeBigUInt64LE(255n, 80); // f_namemax
  return buf;
}

/**
 * struct fuse_entry_out + struct fuse_open_out: the CREATE reply as the kernel reads it (libfuse's
 * fuse_reply_create cannot carry FOPEN_PASSTHROUGH and a backing id, so this one is written with fuse_reply_buf).
 */
export function createOutBuffer(ino: number, info: FileInfo, timeout: number, fh: number, openFlags: number, backingId: number): Buffer {
  const buf = Buffer.alloc(128 + 16);
  const sec = BigInt(Math.floor(timeout));
  const nsec = Math.round((timeout - Math.floor(timeout)) * 1e9);
  buf.writeBigUInt64LE(BigInt(ino), 0); // nodeid
  buf.writeBigUInt64LE(sec, 16); // entry_valid
  buf.writeBigUInt64LE(sec, 24); // attr_valid
  buf.writeUInt32LE(nsec, 32);
  buf.writeUInt32LE(nsec, 36);
  // struct fuse_attr at 40
  const a = 40;
  const t = BigInt(Math.floor(info.mtimeMs / 1000));
  const tn = Math.round((info.mtimeMs % 1000) * 1e6);
  buf.writeBigUInt64LE(BigInt(ino), a);
  buf.writeBigUInt64LE(BigInt(info.size), a + 8);
  buf.writeBigUInt64LE(BigInt(Math.ceil(info.size / 512)), a + 16);
  for (const off of [24, 32, 40]) buf.writeBigUInt64LE(t, a + off); // atime, mtime, ctime
  for (const off of [48, 52, 56]) buf.writeUInt32LE(tn, a + off);
  buf.writeUInt32LE(typeBits(info) | (info.mode & 0o7777), a + 60);
  buf.writeUInt32LE(info.kind === 'dir' ? 2 : 1, a + 64); // nlink
  buf.writeUInt32LE(info.uid, a + 68);
  buf.writeUInt32LE(info.gid, a + 72);
  buf.writeUInt32LE(BLKSIZE, a + 80);
  // struct fuse_open_out at 128
  buf.writeBigUInt64LE(BigInt(fh), 128);
  buf.writeUInt32LE(openFlags >>> 0, 136);
  buf.writeInt32LE(backingId, 140);
  return buf;
}
