/**
 * The bytes of one ranged fetch as they arrive from storage. Network chunks (about 64 KiB, at arbitrary offsets)
 * are held until their block is whole, then written to its place in the data file with one writev; each is fed to
 * its block's checksum as it arrives. A fetch so holds at most one block, never its whole range (a fresh multi-MiB
 * buffer per GET, page-faulted in and collected again, was a third of a cold read's CPU).
 *
 * Why whole blocks: a data file filled by many small unaligned writes from several fetches at once read back at
 * 0.4-0.6x the speed of the same bytes written in order on this VM's disk (1.1-2.2 s against 0.5-0.9 s per GiB,
 * with dd after dropping the page cache), and one call per block is 16x fewer system calls.
 */
import { readSync, writeSync, writevSync } from 'node:fs';
import { blockSum, blockSummer } from './checksum.js';

let zeros = Buffer.alloc(0);
function zeroes(n: number): Buffer {
  if (zeros.length < n) zeros = Buffer.alloc(n);
  return zeros.subarray(0, n);
}

export class FetchSink {
  /** Offset in the file of the next byte to arrive. */
  private pos: number;
  private block: number;
  /** The current block's bytes so far: pieces of network chunks, written together when the block is whole. */
  private pieces: Buffer[] = [];
  private summer = blockSummer();
  /** Bytes of the current block gathered in pieces. */
  private fed = 0;
  private readonly sums = new Map<number, string>();

  /**
   * @param offset where the fetch starts: a block boundary
   * @param limit bytes at or past it are not kept (the file's fetch limit: storage's bytes end there)
   * @param spanOf the bytes of block b within the file size (its checksum covers those, zero-padded)
   */
  constructor(
    private readonly fd: number,
    offset: number,
    private readonly limit: number,
    private readonly blockSize: number,
    private readonly spanOf: (b: number) => number,
  ) {
    this.pos = offset;
    this.block = Math.floor(offset / blockSize);
  }

  readonly push = (chunk: Buffer): void => {
    const keep = Math.min(chunk.length, Math.max(0, this.limit - this.pos));
    for (let p = 0; p < keep; ) {
      const take = Math.min(keep - p, this.blockSize - this.fed);
      const piece = take === chunk.length ? chunk : chunk.subarray(p, p + take);
      this.pieces.push(piece);
      this.summer.update(piece);
      this.fed += take;
      p += take;
      if (this.fed === this.blockSize) this.endBlock();
    }
    this.pos += chunk.length;
  };

  /** Write the gathered pieces of the current block in one call and checksum its span (zeros past what arrived). */
  private endBlock(): void {
    const start = this.block * this.blockSize;
    const done = this.pieces.length ? writevSync(this.fd, this.pieces, start) : 0;
    if (done < this.fed) {
      // A short write (rare on a local file): the rest in as many writes as it takes.
      const rest = Buffer.concat(this.pieces).subarray(done);
      for (let d = 0; d < rest.length; ) d += writeSync(this.fd, rest, d, rest.length - d, start + done + d);
    }
    const span = this.spanOf(this.block);
    if (span > this.fed) this.summer.update(zeroes(span - this.fed));
    this.sums.set(this.block, this.summer.digest());
    this.block++;
    this.pieces = [];
    this.summer = blockSummer();
    this.fed = 0;
  }

  /**
   * Write what is still gathered and return the checksums of blocks up to `last` (those that got fewer bytes than
   * their span — a short object — end in zeros).
   */
  finish(last: number): Map<number, string> {
    while (this.block <= last && this.spanOf(this.block) > 0) this.endBlock();
    return this.sums;
  }
}

let readBuf = Buffer.alloc(0);

/**
 * The checksums of blocks [first, last] as they are in the data file, each over its span: for a fetch that storage
 * wrote into the file itself (libcurl), read back from the page cache it just filled.
 */
export function blockSumsInFile(fd: number, first: number, last: number, blockSize: number, spanOf: (b: number) => number): Map<number, string> {
  if (readBuf.length < blockSize) readBuf = Buffer.alloc(blockSize);
  const sums = new Map<number, string>();
  for (let b = first; b <= last; b++) {
    const span = spanOf(b);
    if (span <= 0) break;
    let got = 0;
    while (got < span) {
      const n = readSync(fd, readBuf, got, span - got, b * blockSize + got);
      if (n === 0) break;
      got += n;
    }
    // Past the end of the file (never, for a range that arrived whole): zeros, as a short fetch leaves them.
    if (got < span) readBuf.fill(0, got, span);
    sums.set(b, blockSum(readBuf.subarray(0, span)));
  }
  return sums;
}
