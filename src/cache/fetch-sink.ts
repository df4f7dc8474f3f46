/**
 * The bytes of one ranged fetch as they arrive from storage: each network chunk is written straight to its place
 * in the data file and fed to its block's checksum, so a fetch never holds its whole range in memory (a fresh
 * multi-MiB buffer per GET, page-faulted in and collected again, was a third of a cold read's CPU).
 */
import { writeSync } from 'node:fs';
import { blockSummer } from './checksum.js';

let zeros = Buffer.alloc(0);
function zeroes(n: number): Buffer {
  if (zeros.length < n) zeros = Buffer.alloc(n);
  return zeros.subarray(0, n);
}

export class FetchSink {
  /** Offset in the file of the next byte to arrive. */
  private pos: number;
  private block: number;
  private summer = blockSummer();
  private fed = 0;
  private readonly sums = new Map<number, string>();

  /**
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
    for (let done = 0; done < keep; ) done += writeSync(this.fd, chunk, done, keep - done, this.pos + done);
    for (let p = 0; p < keep; ) {
      const blockEnd = (this.block + 1) * this.blockSize;
      const take = Math.min(keep - p, blockEnd - (this.pos + p));
      this.summer.update(chunk.subarray(p, p + take));
      this.fed += take;
      p += take;
      if (this.pos + p === blockEnd) this.endBlock();
    }
    this.pos += chunk.length;
  };

  private endBlock(): void {
    const span = this.spanOf(this.block);
    if (span > this.fed) this.summer.update(zeroes(span - this.fed));
    this.sums.set(this.block, this.summer.digest());
    this.block++;
    this.summer = blockSummer();
    this.fed = 0;
  }

  /** Checksums of blocks up to `last` (those that got fewer bytes than their span — a short object — end in zeros). */
  finish(last: number): Map<number, string> {
    while (this.block <= last && this.spanOf(this.block) > 0) this.endBlock();
    return this.sums;
  }
}
