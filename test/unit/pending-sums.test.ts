/** PendingSums: checksums of fetched blocks computed once nothing fetches, only for blocks still wanted. */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { blockSum, initChecksums } from '../../src/cache/checksum.js';
import { PendingSums, type SumSource } from '../../src/cache/pending-sums.js';

const bs = 4096;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let dir: string;
let fd: number;
const data = Buffer.alloc(3 * bs - 100);
for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;

beforeAll(() => initChecksums());
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-sums-'));
  fd = openSync(path.join(dir, 'f'), 'w+');
  writeSync(fd, data, 0, data.length, 0);
});
afterEach(() => {
  closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

const sumOfBlock = (b: number) => blockSum(data.subarray(b * bs, Math.min(data.length, (b + 1) * bs)));

describe('PendingSums', () => {
  it('waits while a fetch is in flight, then sums the blocks still wanted (the last one short)', async () => {
    const saved: { id: number; idx: number; sum: string }[] = [];
    const src: SumSource = { fd, size: data.length, wants: (b) => b !== 1, owned: false };
    const ps = new PendingSums({ blockSize: bs, idleMs: 30, source: () => src, save: (id, sums) => saved.push(...sums.map((s) => ({ id, ...s }))) });
    ps.fetchStarted();
    ps.add(7, [0, 1, 2]);
    await sleep(200);
    expect(saved).toEqual([]);
    expect(ps.size).toBe(3);
    ps.fetchEnded();
    await sleep(300);
    expect(saved).toEqual([
      { id: 7, idx: 0, sum: sumOfBlock(0) },
      { id: 7, idx: 2, sum: sumOfBlock(2) },
    ]);
    expect(ps.size).toBe(0);
    ps.stop();
  });

  it('reads hold summing back, except past the backlog: then it goes on down to it', async () => {
    const saved: number[] = [];
    const ps = new PendingSums({ blockSize: bs, idleMs: 30, backlogBlocks: 2, source: () => ({ fd, size: data.length, wants: () => true, owned: false }), save: (_id, sums) => saved.push(...sums.map((s) => s.idx)) });
    const reader = setInterval(() => ps.touch(), 5);
    try {
      ps.add(1, [0]);
      await sleep(200);
      expect(saved).toEqual([]); // one block, reads going on: it waits
      ps.add(1, [1, 2]);
      await sleep(200);
      expect(saved).toEqual([0]); // three is past the backlog of two: one is summed, reads or not
      expect(ps.size).toBe(2);
    } finally {
      clearInterval(reader);
    }
    await sleep(200);
    expect(saved).toEqual([0, 1, 2]);
    ps.stop();
  });

  it('keeps the blocks of a file that must wait and sums them once it may; a file gone is forgotten', async () => {
    const saved: { id: number; idx: number }[] = [];
    let busy = true;
    const ps = new PendingSums({
      blockSize: bs,
      idleMs: 30,
      source: (id) => (id === 2 ? undefined : busy ? 'later' : { fd, size: data.length, wants: () => true, owned: false }),
      save: (id, sums) => saved.push(...sums.map((s) => ({ id, idx: s.idx }))),
    });
    ps.add(1, [2, 0]);
    ps.add(2, [0]);
    await sleep(200);
    expect(saved).toEqual([]);
    expect(ps.size).toBe(2); // file 2 is gone, file 1 waits
    busy = false;
    await sleep(200);
    expect(saved).toEqual([
      { id: 1, idx: 2 },
      { id: 1, idx: 0 },
    ]);
    ps.stop();
  });

  it('drain sums everything at once, and closes descriptors it was handed to own', async () => {
    const own = openSync(path.join(dir, 'f'), 'r');
    const saved: string[] = [];
    const ps = new PendingSums({ blockSize: bs, idleMs: 60_000, source: () => ({ fd: own, size: data.length, wants: () => true, owned: true }), save: (_id, sums) => saved.push(...sums.map((s) => s.sum)) });
    ps.add(1, [0, 1, 2]);
    ps.drain();
    expect(saved).toEqual([sumOfBlock(0), sumOfBlock(1), sumOfBlock(2)]);
    expect(() => closeSync(own)).toThrow(/EBADF/);
    ps.stop();
  });
});
