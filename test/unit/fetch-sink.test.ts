/** FetchSink: network chunks of any size and alignment land in the data file whole, with per-block checksums. */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FetchSink } from '../../src/cache/fetch-sink.js';
import { blockSum, initChecksums } from '../../src/cache/checksum.js';

const BS = 4096;
let dir: string;
beforeAll(() => initChecksums());
beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-sink-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Feed `data` (starting at block `first`) in chunks of the given sizes; return the file and the checksums. */
function run(data: Buffer, first: number, chunkSizes: number[], size: number, limit = size) {
  const file = path.join(dir, 'data');
  const fd = openSync(file, 'w+');
  const sink = new FetchSink(fd, first * BS, limit, BS, (b) => Math.min(BS, size - b * BS));
  for (let p = 0, i = 0; p < data.length; i++) {
    const n = Math.min(chunkSizes[i % chunkSizes.length], data.length - p);
    sink.push(data.subarray(p, p + n));
    p += n;
  }
  const last = Math.floor((Math.min(limit, size) - 1) / BS);
  const sums = sink.finish(last);
  closeSync(fd);
  return { content: readFileSync(file), sums };
}

describe('FetchSink', () => {
  it('writes unaligned chunks to their place and sums each block', () => {
    const size = 5 * BS + 100; // a short last block
    const data = bytes(size - 2 * BS, 3); // blocks 2..5
    const { content, sums } = run(data, 2, [1000, 7, 4096, 5000], size);
    expect(content.subarray(2 * BS)).toEqual(data);
    expect([...sums.keys()]).toEqual([2, 3, 4, 5]);
    expect(sums.get(2)).toBe(blockSum(data.subarray(0, BS)));
    expect(sums.get(5)).toBe(blockSum(data.subarray(3 * BS)));
  });

  it('sums a block that storage cut short as zero-padded, and keeps nothing past the limit', () => {
    const size = 3 * BS;
    const data = bytes(BS + 10, 9); // storage returned less than the 3 blocks asked for
    const { content, sums } = run(data, 0, [333], size);
    expect(content.length).toBe(BS + 10);
    const padded = Buffer.concat([data.subarray(BS), Buffer.alloc(BS - 10)]);
    expect(sums.get(1)).toBe(blockSum(padded));
    expect(sums.get(2)).toBe(blockSum(Buffer.alloc(BS)));

    const limited = run(bytes(2 * BS, 1), 0, [BS * 2], size, BS + 5);
    expect(limited.content.length).toBe(BS + 5);
  });
});
