/** The CBCache model of the vault on in-memory storage: size limit and eviction, pins, tags, status, enumeration, flush. */
import { mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ENUM_MODE, FILE_STATUS, FLUSH, FLUSH_MODE, FLUSH_RESULT, PURGE } from '../../src/cache/constants.js';
import { Vault } from '../../src/cache/vault.js';
import { MemoryStorage } from '../../src/storage/memory.js';

const KiB = 1024;
const BS = 64 * KiB;
const attrs = { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 };
let dir: string;
let storage: MemoryStorage;

const du = (): number => Number(execFileSync('du', ['-sk', path.join(dir, 'data')], { encoding: 'utf8' }).split('\t')[0]) * KiB;

function obj(key: string, blocks: number): { etag: string; size: number } {
  const data = Buffer.alloc(blocks * BS, key.length);
  return { etag: storage.putObject(key, data), size: data.length };
}

async function readWhole(vault: Vault, key: string, base: { etag: string; size: number }): Promise<void> {
  const f = await vault.openFile(key, base, attrs);
  await f.read(0, base.size);
  await vault.closeFile(f);
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-model-'));
  storage = new MemoryStorage();
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('vault: size limit and eviction', () => {
  it('evicts closed files least recently used first, and the disk space really returns', async () => {
    const vault = await Vault.open({ dir, storage, blockSize: BS, sizeLimit: 10 * BS });
    const a = obj('a', 4);
    const b = obj('b', 4);
    const c = obj('c', 4);
    await readWhole(vault, 'a', a);
    await readWhole(vault, 'b', b);
    await readWhole(vault, 'a', a); // a is now more recent than b
    await readWhole(vault, 'c', c); // 12 blocks > 10: b goes
    vault.evict();
    expect(vault.usedBytes).toBeLessThanOrEqual(10 * BS);
    const cached = Object.fromEntries(vault.status().map((s) => [s.key, s.cachedBytes]));
    expect(cached).toEqual({ a: 4 * BS, b: 0, c: 4 * BS });
    expect(du()).toBeLessThanOrEqual(10 * BS + 16 * KiB);
    await vault.close();
  });

  it('a file larger than the limit reads correctly while the vault stays bounded (clean blocks of an open file go)', async () => {
    const vault = await Vault.open({ dir, storage, blockSize: BS, sizeLimit: 8 * BS, readAheadBlocks: 2 });
    const data = Buffer.alloc(40 * BS);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
    const etag = storage.putObject('big', data);
    const f = await vault.openFile('big', { etag, size: data.length }, attrs);
    let max = 0;
    for (let off = 0; off < data.length; off += 16 * KiB) {
      const got = await f.read(off, 16 * KiB);
      if (Buffer.compare(got, data.subarray(off, off + 16 * KiB)) !== 0) throw new Error(`wrong bytes at ${off}`);
      await new Promise((r) => setImmediate(r)); // let scheduled eviction run, as between FUSE requests
      max = Math.max(max, vault.usedBytes);
    }
    expect(max).toBeLessThanOrEqual(12 * BS); // limit + what read-ahead holds in flight
    expect(du()).toBeLessThanOrEqual(12 * BS);
    await vault.closeFile(f);
    await vault.close();
  });

  it('never evicts pinned files or files with changes', async () => {
    const vault = await Vault.open({ dir, storage, blockSize: BS, sizeLimit: 4 * BS });
    const p = obj('pinned', 3);
    const f = await vault.openFile('pinned', p, attrs);
    vault.setPinned('pinned', true);
    await f.fetchAll();
    await vault.closeFile(f);
    const d = await vault.openFile('dirty', null, attrs);
    await d.write(0, Buffer.alloc(3 * BS, 9));
    await d.commit();
    await vault.closeFile(d);
    await readWhole(vault, 'other', obj('other', 3));
    vault.evict();
    const cached = Object.fromEntries(vault.status().map((s) => [s.key, s.cachedBytes]));
    expect(cached.pinned).toBe(3 * BS);
    expect(cached.dirty).toBe(3 * BS);
    expect(cached.other).toBe(0);
    // Unpinned, it may go.
    vault.setPinned('pinned', false);
    vault.evict();
    expect(vault.status().find((s) => s.key === 'pinned')!.cachedBytes).toBe(0);
    await vault.close();
  });

  it('counts the bytes files hold, not whole blocks: many small files fit', async () => {
    const vault = await Vault.open({ dir, storage, blockSize: BS, sizeLimit: 4 * BS });
    for (let i = 0; i < 100; i++) {
      const f = await vault.openFile(`small${i}`, null, attrs);
      await f.write(0, Buffer.alloc(100, i));
      await f.commit();
      await vault.closeFile(f);
    }
    await vault.flushAll();
    vault.evict();
    expect(vault.usedBytes).toBe(100 * 100);
    expect(vault.status().every((s) => s.cachedBytes === 100)).toBe(true); // nothing evicted
    await vault.close();
  });

  it('the accounting survives a reopen', async () => {
    let vault = await Vault.open({ dir, storage, blockSize: BS });
    await readWhole(vault, 'a', obj('a', 5));
    await vault.close();
    vault = await Vault.open({ dir, storage, blockSize: BS });
    expect(vault.usedBytes).toBe(5 * BS);
    const f = await vault.openFile('a', { etag: storage.objects.get('a')!.etag, size: 5 * BS }, attrs);
    await f.setSize(4 * BS + 10);
    expect(vault.usedBytes).toBe(4 * BS + 10);
    await vault.closeFile(f);
    await vault.close();
  });
});

describe('vault: tags (R43)', () => {
  it('stores binary tags per file and rejects out-of-range ids and sizes', async () => {
    const vault = await Vault.open({ dir, storage });
    const f = await vault.openFile('t', null, attrs);
    vault.setTag('t', 0x0001, Buffer.from([1, 2, 3]));
    vault.setTag('t', 0xcfff, Buffer.alloc(65531, 7));
    expect(vault.getTag('t', 1)).toEqual(Buffer.from([1, 2, 3]));
    expect(vault.listTags('t').map((t) => t.id)).toEqual([1, 0xcfff]);
    expect(() => vault.setTag('t', 0, Buffer.from([1]))).toThrow(/tag id 0x0000 is out of range \(0x0001–0xCFFF\)/);
    expect(() => vault.setTag('t', 0xd000, Buffer.from([1]))).toThrow(/out of range/);
    expect(() => vault.setTag('t', 2, Buffer.alloc(0))).toThrow(/1–65531 bytes/);
    expect(() => vault.setTag('t', 2, Buffer.alloc(65532))).toThrow(/1–65531 bytes/);
    expect(() => vault.setTag('missing', 2, Buffer.from([1]))).toThrow(/no record/);
    expect(vault.deleteTag('t', 1)).toBe(true);
    expect(vault.getTag('t', 1)).toBeUndefined();
    await vault.closeFile(f);
    await vault.close();
    const again = await Vault.open({ dir, storage });
    expect(again.getTag('t', 0xcfff)?.length).toBe(65531);
    await again.close();
  });
});

describe('vault: status, enumeration and flush (CBCache API)', () => {
  it('reports per-file status and enumerates by ENUM_MODE flags', async () => {
    const vault = await Vault.open({ dir, storage, blockSize: BS });
    await readWhole(vault, 'clean', obj('clean', 2));
    const o = await vault.openFile('orphan', null, attrs);
    await o.write(0, Buffer.from('x'));
    await vault.closeFile(o);
    const open = await vault.openFile('open', null, attrs);
    await open.write(0, Buffer.from('y'));
    const local = await vault.openFile('.swp', null, attrs, { local: true });
    await vault.closeFile(local);
    vault.setPinned('clean', true);
    const st = Object.fromEntries(vault.status().map((s) => [s.key, s.status]));
    expect(st).toEqual({ '.swp': FILE_STATUS.LOCAL, clean: FILE_STATUS.UNCHANGED, open: FILE_STATUS.CHANGED, orphan: FILE_STATUS.ORPHAN });
    expect(vault.enumerateCachedFiles(ENUM_MODE.ALL)).toEqual(['.swp', 'clean', 'open', 'orphan']);
    expect(vault.enumerateCachedFiles(ENUM_MODE.ORPHAN)).toEqual(['orphan']);
    expect(vault.enumerateCachedFiles(ENUM_MODE.CHANGED)).toEqual(['open', 'orphan']);
    expect(vault.enumerateCachedFiles(ENUM_MODE.LOCAL | ENUM_MODE.PINNED)).toEqual(['.swp', 'clean']);
    expect(await vault.flushFile('orphan', FLUSH_MODE.TEST)).toBe(FLUSH_RESULT.DIRTY);
    expect(await vault.flushFile('orphan', FLUSH_MODE.SYNC)).toBe(FLUSH_RESULT.SUCCESS);
    expect(storage.objects.get('orphan')!.data.toString()).toBe('x');
    expect(await vault.flushFile('orphan', FLUSH_MODE.TEST)).toBe(FLUSH_RESULT.NOTHING);
    expect(await vault.flushFile('.swp', FLUSH_MODE.SYNC)).toBe(FLUSH_RESULT.NOTHING);
    expect(storage.objects.has('.swp')).toBe(false);
    await vault.closeFile(open);
    await vault.close();
  });
});

describe('vault: close actions (R49) and FetchMissingData (R42)', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('FLUSH.IMMEDIATE uploads before close returns; DELAYED after FlushAfterCloseDelay; a later change wins', async () => {
    const vault = await Vault.open({ dir, storage, flushAfterCloseMs: 50 });
    let f = await vault.openFile('now', null, attrs);
    await f.write(0, Buffer.from('now'));
    await vault.closeFile(f, { flush: FLUSH.IMMEDIATE });
    expect(storage.objects.get('now')!.data.toString()).toBe('now');
    f = await vault.openFile('later', null, attrs);
    await f.write(0, Buffer.from('later'));
    await vault.closeFile(f, { flush: FLUSH.DELAYED });
    expect(storage.objects.has('later')).toBe(false);
    await sleep(150);
    expect(storage.objects.get('later')!.data.toString()).toBe('later');
    f = await vault.openFile('again', null, attrs);
    await f.write(0, Buffer.from('1'));
    await vault.closeFile(f, { flush: FLUSH.DELAYED });
    f = await vault.openFile('again', null, attrs); // reopened and changed within the delay
    await f.write(0, Buffer.from('2'));
    await vault.closeFile(f, { flush: FLUSH.DELAYED });
    await sleep(200);
    expect(storage.objects.get('again')!.data.toString()).toBe('2');
    expect(vault.queue()).toEqual([]);
    await vault.close();
  });

  it('PURGE.IMMEDIATE and DELAYED drop the clean blocks of a closed file', async () => {
    const vault = await Vault.open({ dir, storage, blockSize: BS, purgeAfterCloseMs: 50 });
    const a = obj('a', 2);
    let f = await vault.openFile('a', a, attrs);
    await f.read(0, a.size);
    await vault.closeFile(f, { purge: PURGE.IMMEDIATE });
    expect(vault.status()[0]!.cachedBytes).toBe(0);
    f = await vault.openFile('a', a, attrs);
    await f.read(0, a.size);
    await vault.closeFile(f, { purge: PURGE.DELAYED });
    expect(vault.status()[0]!.cachedBytes).toBe(2 * BS);
    await sleep(150);
    expect(vault.status()[0]!.cachedBytes).toBe(0);
    expect(vault.usedBytes).toBe(0);
    await vault.close();
  });

  it('CloseCache with FLUSH.IMMEDIATE uploads every pending change; with DELAYED, none', async () => {
    let vault = await Vault.open({ dir, storage });
    const f = await vault.openFile('pending', null, attrs);
    await f.write(0, Buffer.from('p'));
    await vault.closeFile(f);
    await vault.close({ flush: FLUSH.DELAYED });
    expect(storage.objects.has('pending')).toBe(false);
    vault = await Vault.open({ dir, storage });
    expect(vault.orphans.map((r) => r.key)).toEqual(['pending']);
    await vault.close({ flush: FLUSH.IMMEDIATE });
    expect(storage.objects.get('pending')!.data.toString()).toBe('p');
  });

  it('FileSetSize with FetchMissingData brings the rest of the file into the vault', async () => {
    const vault = await Vault.open({ dir, storage, blockSize: BS });
    const a = obj('a', 3);
    const f = await vault.openFile('a', a, attrs);
    await f.setSize(a.size + 10, true);
    expect(f.cachedBlocks()).toBe(4);
    const before = storage.calls.read;
    expect((await f.read(0, a.size + 10)).subarray(a.size).every((b) => b === 0)).toBe(true);
    expect(storage.calls.read).toBe(before);
    await vault.close();
  });
});
