/** The vault on in-memory storage: lazy block fetches, coalescing, read-modify-write, sizes, journal, recovery. */
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Vault } from '../../src/cache/vault.js';
import { checkAndRepair } from '../../src/cache/check.js';
import { VaultError } from '../../src/cache/errors.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { blockSum, initChecksums } from '../../src/cache/checksum.js';
import Database from 'better-sqlite3';

const KiB = 1024;
const attrs = { mode: 0o644, uid: 1, gid: 2, mtimeMs: 1_000_000 };
let dir: string;
let storage: MemoryStorage;

function openVault(): Promise<Vault> {
  return Vault.open({ dir, storage, blockSize: 64 * KiB, fetchBlocks: 4, readAheadBlocks: 8 });
}

type Batched = (job: () => void) => Promise<void>;
/** Route the vault's batched journal writes through `each` (n counts them from 1; `real` is the vault's own). */
function onBatched(vault: Vault, each: (n: number, job: () => void, real: Batched) => Promise<void>): void {
  const statements = (vault as unknown as { statements: { batched: Batched } }).statements;
  const real = statements.batched.bind(statements);
  let n = 0;
  statements.batched = (job) => each(++n, job, real);
}

function pattern(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + (i >> 10)) & 0xff;
  return b;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-vault-'));
  storage = new MemoryStorage();
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('vault: reads', () => {
  it('fetches absent blocks lazily, then serves them without any request', async () => {
    const data = pattern(300 * KiB);
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    expect(await f.read(70 * KiB, 10)).toEqual(data.subarray(70 * KiB, 70 * KiB + 10));
    expect(storage.calls.read).toBe(1);
    expect(f.cachedBlocks()).toBe(1); // a random read fetches only its block
    expect(await f.read(64 * KiB, 64 * KiB)).toEqual(data.subarray(64 * KiB, 128 * KiB));
    expect(storage.calls.read).toBe(1);
    await vault.closeFile(f);
    await vault.close();
  });

  it('fetches adjacent absent blocks in one ranged request, and concurrent readers share it', async () => {
    const data = pattern(256 * KiB);
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    const [a, b] = await Promise.all([f.read(0, 256 * KiB), f.read(100 * KiB, 10)]);
    expect(a).toEqual(data);
    expect(b).toEqual(data.subarray(100 * KiB, 100 * KiB + 10));
    expect(storage.calls.read).toBe(1);
    await vault.close();
  });

  it('reads sequentially with a growing read-ahead window and returns exact bytes to EOF', async () => {
    const data = pattern(2 * 1024 * KiB + 123);
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    const parts: Buffer[] = [];
    for (let off = 0; off < data.length; off += 32 * KiB) parts.push(await f.read(off, 32 * KiB));
    expect(Buffer.compare(Buffer.concat(parts), data)).toBe(0);
    expect(storage.calls.read).toBeLessThan(17); // 33 blocks: without read-ahead it would be 33 requests
    expect(await f.read(data.length, 10)).toHaveLength(0);
    await vault.close();
  });

  it('keeps the read-ahead window when the kernel answers two sequential reads out of order', async () => {
    const data = pattern(4 * 1024 * KiB);
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    const blocks = data.length / (64 * KiB);
    // 0 1 2 3 5 4 6 7 9 8 …: every fourth pair swapped, as two readahead requests of FUSE can arrive.
    const order = Array.from({ length: blocks }, (_, i) => (i % 4 === 0 && i > 0 && i + 1 < blocks ? i + 1 : i % 4 === 1 && i > 1 ? i - 1 : i));
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: blocks }, (_, i) => i));
    for (const b of order) expect(Buffer.compare(await f.read(b * 64 * KiB, 64 * KiB), data.subarray(b * 64 * KiB, (b + 1) * 64 * KiB))).toBe(0);
    // In order: 19 requests (ranged reads of up to 4 blocks); with the window reset at every swap it took 63.
    expect(storage.calls.read).toBeLessThanOrEqual(21);
    await vault.close();
  });

  it('never mixes versions: a changed object fails the fetch (FILE_MODIFIED_EXTERNALLY)', async () => {
    const etag = storage.putObject('f', pattern(200 * KiB));
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: 200 * KiB }, attrs);
    await f.read(0, 10);
    storage.putObject('f', Buffer.alloc(200 * KiB, 1));
    await expect(f.read(150 * KiB, 10)).rejects.toMatchObject({ result: 0x82 });
    await vault.close();
  });

  it('drops clean blocks of a file whose remote version changed before it is opened again', async () => {
    const etag1 = storage.putObject('f', Buffer.from('version one'));
    const vault = await openVault();
    let f = await vault.openFile('f', { etag: etag1, size: 11 }, attrs);
    expect((await f.read(0, 100)).toString()).toBe('version one');
    await vault.closeFile(f);
    const etag2 = storage.putObject('f', Buffer.from('version two!'));
    f = await vault.openFile('f', { etag: etag2, size: 12 }, attrs);
    expect((await f.read(0, 100)).toString()).toBe('version two!');
    await vault.close();
  });
});

describe('vault: writes and sizes', () => {
  it('a partial overwrite of an absent block keeps the rest of the block (read-modify-write) and uploads whole', async () => {
    const data = pattern(200 * KiB);
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    await f.write(70 * KiB, Buffer.from('HELLO'));
    expect(await f.upload()).toBe('uploaded');
    const expected = Buffer.from(data);
    expected.write('HELLO', 70 * KiB);
    expect(storage.objects.get('f')!.data).toEqual(expected);
    expect(await f.upload()).toBe('nothing'); // nothing left to upload
    await vault.close();
  });

  it("a write across two absent blocks keeps the first one's old bytes when eviction runs during the second fetch", async () => {
    const data = pattern(200 * KiB);
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    // Block 0's fetch has landed (clean, the file unchanged) when block 1's runs: the evictor runs then, as it did
    // in fsx under a vault smaller than its files.
    const read = storage.read.bind(storage);
    storage.read = async (key, offset, length, tag) => {
      if (offset === 64 * KiB) (vault as unknown as { evictor: { evict(limit: number): void } }).evictor.evict(0);
      return read(key, offset, length, tag);
    };
    await f.write(60 * KiB, Buffer.alloc(10 * KiB, 0x41));
    const expected = Buffer.from(data);
    expected.fill(0x41, 60 * KiB, 70 * KiB);
    // Before, block 0 was evicted while held by nobody, then marked dirty over its punched hole: zeros up to 60 KiB.
    expect(await f.read(0, 200 * KiB)).toEqual(expected);
    expect(await f.upload()).toBe('uploaded');
    expect(storage.objects.get('f')!.data).toEqual(expected);
    await vault.close();
  });

  it('keepBlocks holds every block of a clean file against eviction until let go', async () => {
    const data = pattern(200 * KiB);
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    const evict = (): void => (vault as unknown as { evictor: { evict(limit: number): void } }).evictor.evict(0);
    const letGo = f.keepBlocks();
    await f.fetchAll();
    evict();
    expect(f.cachedBlocks()).toBe(4);
    letGo();
    letGo(); // a second call changes nothing
    evict();
    expect(f.cachedBlocks()).toBe(0);
    await vault.close();
  });

  it('truncate then extend gives zeros, never the old remote bytes', async () => {
    const etag = storage.putObject('f', pattern(150 * KiB));
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: 150 * KiB }, attrs);
    await f.setSize(10);
    await f.setSize(100 * KiB);
    const got = await f.read(0, 100 * KiB);
    expect(got.subarray(0, 10)).toEqual(pattern(10));
    expect(got.subarray(10).every((b) => b === 0)).toBe(true);
    await f.upload();
    expect(storage.objects.get('f')!.data).toEqual(got);
    await vault.close();
  });

  it('truncate then extend while an upload is in flight: zeros, never the bytes that upload left in the object', async () => {
    const etag = storage.putObject('f', pattern(300 * KiB));
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: 300 * KiB }, attrs);
    await f.write(0, Buffer.from('X'));
    await f.commit();
    // The object lands (the old bytes past 10 with it); before the upload's end is recorded, the file is cut to 10
    // bytes and grown back. Found by the fsx test on a 24 MiB file: its reads then fetched the old bytes from the
    // new object (fetchLimit went back up to the size the upload had read).
    const write = storage.write.bind(storage);
    let first = true;
    storage.write = async (...args: Parameters<typeof storage.write>) => {
      const landed = await write(...args);
      if (first) {
        first = false;
        await f.setSize(10);
        await f.setSize(300 * KiB);
      }
      return landed;
    };
    await f.upload();
    const got = await f.read(0, 300 * KiB);
    expect(got.subarray(0, 10)).toEqual(Buffer.concat([Buffer.from('X'), pattern(10).subarray(1)]));
    expect(got.subarray(10).every((b) => b === 0)).toBe(true);
    while (f.dirty) await f.upload();
    expect(storage.objects.get('f')!.data).toEqual(got);
    await vault.close();
  });

  it("after its upload, a sparse file's gaps are read from the vault, not fetched from the object", async () => {
    let vault = await openVault();
    const f = await vault.openFile('s', null, attrs);
    await f.write(0, Buffer.from('head'));
    await f.setSize(300 * KiB + 5); // blocks 1-4 never written: holes, the last one short
    await f.write(150 * KiB, Buffer.from('middle'));
    await f.commit();
    await f.upload();
    // Before, the gaps became "in the object" and each read of them was a GET (offline: EIO).
    const reads = storage.calls.read ?? 0;
    const got = await f.read(0, 300 * KiB + 5);
    expect(storage.calls.read ?? 0).toBe(reads);
    expect(got).toEqual(storage.objects.get('s')!.data);
    expect(f.cachedBlocks()).toBe(5);
    await vault.closeFile(f);
    await vault.close();
    // The vault's check reads every clean block against its checksum: the gaps' sums are right.
    const report = await checkAndRepair(dir);
    expect(report.blocksChecked).toBe(5);
    expect(report.droppedClean).toEqual([]);
    vault = await openVault();
    const g = await vault.openFile('s', { etag: storage.objects.get('s')!.etag, size: 300 * KiB + 5 }, attrs);
    expect(await g.read(200 * KiB, 100 * KiB + 5)).toEqual(Buffer.alloc(100 * KiB + 5));
    expect(storage.calls.read ?? 0).toBe(reads);
    await vault.close();
  });

  it('a new file writes sparse, reads back zeros in the gap, and uploads its exact size', async () => {
    const vault = await openVault();
    const f = await vault.openFile('new', null, attrs);
    await f.write(200 * KiB, Buffer.from('end'));
    expect(f.size).toBe(200 * KiB + 3);
    await f.upload();
    const obj = storage.objects.get('new')!.data;
    expect(obj.length).toBe(200 * KiB + 3);
    expect(obj.subarray(0, 200 * KiB).every((b) => b === 0)).toBe(true);
    expect(obj.subarray(200 * KiB).toString()).toBe('end');
    await vault.close();
  });

  it('an empty new file uploads as an empty object with its metadata', async () => {
    const vault = await Vault.open({ dir, storage, objectMeta: (a) => ({ meta: { mode: String(a.mode) } }) });
    const f = await vault.openFile('empty', null, { ...attrs, mode: 0o600 });
    await f.upload();
    expect(storage.objects.get('empty')!.data.length).toBe(0);
    expect(storage.objects.get('empty')!.meta.mode).toBe(String(0o600));
    await vault.close();
  });
});

describe('vault: journal and recovery', () => {
  it('a file renamed while its last handle closes is closed under its new name, and opens afresh there', async () => {
    const data = pattern(100 * KiB);
    const etag = storage.putObject('a', data);
    const vault = await openVault();
    const f = await vault.openFile('a', { etag, size: data.length }, attrs);
    // A write's read-modify-write holds the file's lock while its fetch waits: the close waits behind it.
    let release!: () => void;
    let reached!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const fetching = new Promise<void>((r) => (reached = r));
    const read = storage.read.bind(storage);
    storage.read = async (key, offset, length, tag) => {
      reached();
      await gate;
      return read(key, offset, length, tag);
    };
    const writing = f.write(10, Buffer.from('xyz'));
    await fetching;
    const closing = vault.closeFile(f);
    storage.objects.set('b', storage.objects.get('a')!); // the rename's copy
    vault.renameFile('a', 'b');
    release();
    await writing;
    await closing;
    // Before, the closed file stayed open under "b": the next open of "b" got it back, its descriptor closed.
    expect(vault.isOpen('b')).toBe(false);
    const g = await vault.openFile('b', { etag, size: data.length }, attrs);
    expect(g).not.toBe(f);
    const want = Buffer.from(data);
    want.write('xyz', 10);
    expect(await g.read(0, data.length)).toEqual(want);
    await vault.closeFile(g);
    await vault.close();
  });

  it("a block evicted between an upload's end and its batched commit stays out of the journal (it read back as zeros)", async () => {
    let vault = await openVault();
    const data = pattern(128 * KiB + 10);
    const f = await vault.openFile('e', null, attrs);
    await f.write(0, data);
    await f.commit();
    // The upload's end is the second batched journal write (the first: its attempt). The evictor runs just before it,
    // as its setImmediate did in fsx (the blocks are clean and the file unchanged by then).
    onBatched(vault, (n, job, real) => {
      if (n === 2) (vault as unknown as { evictor: { evict(limit: number): void } }).evictor.evict(0);
      return real(job);
    });
    expect(await f.upload()).toBe('uploaded');
    expect(f.cachedBlocks()).toBe(0);
    await vault.closeFile(f);
    await vault.close();
    expect((await checkAndRepair(dir)).droppedClean).toEqual([]);
    vault = await openVault();
    const g = await vault.openFile('e', { etag: storage.objects.get('e')!.etag, size: data.length }, attrs);
    // Before, the journal said clean for both blocks, whose bytes eviction had punched out: zeros, and the next upload
    // sent them.
    expect(g.cachedBlocks()).toBe(0);
    expect(await g.read(0, data.length)).toEqual(data);
    await vault.close();
  });

  it('a file cut and grown back between two commits keeps no journal rows of the blocks the cut cleared', async () => {
    let vault = await openVault();
    const f = await vault.openFile('c', null, attrs);
    await f.write(0, pattern(192 * KiB));
    await f.commit();
    await f.setSize(0);
    await f.write(130 * KiB, Buffer.from('tail'));
    await f.commit();
    expect(f.cachedBlocks()).toBe(1);
    await vault.closeFile(f);
    await vault.close();
    // Before, blocks 0 and 1 kept their rows (dirty, with the checksums of the old bytes) over zeros.
    const report = await checkAndRepair(dir);
    expect(report.damagedDirty).toEqual([]);
    expect(report.blocksChecked).toBe(1);
    vault = await openVault();
    const g = await vault.openFile('c', null, attrs);
    expect(g.cachedBlocks()).toBe(1);
    const got = await g.read(0, 130 * KiB + 4);
    expect(got.subarray(0, 130 * KiB).every((b) => b === 0)).toBe(true);
    expect(got.subarray(130 * KiB).toString()).toBe('tail');
    await vault.close();
  });

  it('keeps committed dirty data across a crash (orphans) and forgets clean blocks after an unclean stop', async () => {
    const etag = storage.putObject('clean', pattern(100 * KiB));
    let vault = await openVault();
    const c = await vault.openFile('clean', { etag, size: 100 * KiB }, attrs);
    await c.read(0, 100 * KiB);
    await vault.closeFile(c);
    const d = await vault.openFile('dirty', null, attrs);
    await d.write(0, Buffer.from('unsaved work'));
    await d.commit(); // fsync
    // Simulate kill -9: nothing more is written, and the lock is left behind, naming a dead pid.
    await vault.simulateCrash();
    writeFileSync(path.join(dir, 'vault.lock'), '999999');
    vault = await openVault();
    expect(vault.orphans.map((r) => r.key)).toEqual(['dirty']);
    const d2 = await vault.openFile('dirty', null, attrs);
    expect((await d2.read(0, 100)).toString()).toBe('unsaved work');
    await d2.upload();
    expect(storage.objects.get('dirty')!.data.toString()).toBe('unsaved work');
    const before = storage.calls.read ?? 0;
    const c2 = await vault.openFile('clean', { etag, size: 100 * KiB }, attrs);
    await c2.read(0, 100 * KiB);
    expect(storage.calls.read).toBeGreaterThan(before); // refetched after the unclean stop
    await vault.close();
    vault = await openVault();
    expect(vault.orphans).toHaveLength(0);
    await vault.close();
  });

  it("an upload's end commits at the end of the turn: a pin made meanwhile stays, a crash before it adopts the object", async () => {
    let vault = await openVault();
    const f = await vault.openFile('p', null, attrs);
    await f.write(0, Buffer.from('pinned while its upload ends'));
    await f.commit();
    await vault.closeFile(f);
    // The second batched job of the upload is its end (the first, its attempt): pin the file just after it is asked for.
    let jobs = 0;
    onBatched(vault, (n, job, real) => {
      const done = real(job);
      jobs = n;
      if (n === 2) vault.setPinned('p', true);
      return done;
    });
    await vault.flushFile('p');
    expect(jobs).toBe(2);
    expect(storage.objects.get('p')!.data.toString()).toBe('pinned while its upload ends');
    await vault.close();
    vault = await openVault();
    expect(vault.record('p')).toMatchObject({ pinned: true, dirty: false });
    // Killed after the object landed but before the end's commit: the next start finds it exactly the file's bytes.
    const g = await vault.openFile('q', null, attrs);
    await g.write(0, Buffer.from('landed, then the crash'));
    await g.commit();
    await vault.closeFile(g);
    onBatched(vault, (n, job, real) => (n === 2 ? Promise.resolve() : real(job))); // the end's commit never reaches the journal
    await vault.flushFile('q');
    expect(storage.objects.get('q')!.data.toString()).toBe('landed, then the crash');
    await vault.simulateCrash();
    writeFileSync(path.join(dir, 'vault.lock'), '999999');
    vault = await openVault();
    expect(vault.orphans.map((r) => r.key)).toEqual(['q']);
    const puts = storage.calls.write ?? 0;
    await vault.flushFile('q');
    expect(vault.record('q')).toMatchObject({ dirty: false });
    expect(storage.calls.write ?? 0).toBe(puts); // adopted: the object is exactly its bytes, nothing sent again
    expect([...storage.objects.keys()].filter((k) => k.includes('conflict'))).toEqual([]);
    await vault.close();
  });

  it('a commit journals the checksum of every changed block, read back in runs, the last block short', async () => {
    await initChecksums();
    const bs = 64 * KiB;
    const data = pattern(21 * bs + 1000); // 22 blocks: runs of at most 8 are read at once
    const vault = await openVault();
    const f = await vault.openFile('sums', null, attrs);
    await f.write(0, data);
    await f.commit();
    // Then change blocks 2, 4-13 and the short last one, not in order: three runs, one longer than 8 blocks.
    for (const b of [21, 9, 2, 4, 13, 5, 6, 7, 8, 10, 11, 12]) {
      const at = b * bs + 10;
      data[at] ^= 0xff;
      await f.write(at, data.subarray(at, at + 1));
    }
    await f.commit(false);
    await vault.simulateCrash();
    const db = new Database(path.join(dir, 'vault.db'), { readonly: true });
    try {
      const rows = db.prepare('SELECT idx, sum FROM blocks ORDER BY idx').all() as { idx: number; sum: string | null }[];
      expect(rows.map((r) => r.idx)).toEqual([...Array(22).keys()]);
      for (const r of rows) expect(r.sum, `block ${r.idx}`).toBe(blockSum(data.subarray(r.idx * bs, (r.idx + 1) * bs)));
    } finally {
      db.close();
    }
  });

  it('a clean close keeps clean blocks: a reopened vault serves them without requests', async () => {
    const etag = storage.putObject('f', pattern(100 * KiB));
    let vault = await openVault();
    const f = await vault.openFile('f', { etag, size: 100 * KiB }, attrs);
    await f.read(0, 100 * KiB);
    await vault.close();
    const before = storage.calls.read;
    vault = await openVault();
    const g = await vault.openFile('f', { etag, size: 100 * KiB }, attrs);
    expect(await g.read(0, 100 * KiB)).toEqual(pattern(100 * KiB));
    expect(storage.calls.read).toBe(before);
    await vault.close();
  });

  it('the block size is a property of the vault: reopening with another keeps the stored one', async () => {
    let vault = await Vault.open({ dir, storage, blockSize: 128 * KiB });
    await vault.close();
    vault = await Vault.open({ dir, storage, blockSize: 1024 * KiB });
    expect(vault.blockSize).toBe(128 * KiB);
    await vault.close();
  });

  it('one process per vault; a corrupt database is refused and left untouched', async () => {
    const vault = await openVault();
    await expect(openVault()).rejects.toThrow(VaultError);
    await vault.close();
    const bad = mkdtempSync(path.join(os.tmpdir(), 's3vault-bad-'));
    writeFileSync(path.join(bad, 'vault.db'), Buffer.alloc(8192, 7));
    await expect(Vault.open({ dir: bad, storage })).rejects.toThrow(/corrupt/);
    expect(statSync(path.join(bad, 'vault.db')).size).toBe(8192);
    rmSync(bad, { recursive: true, force: true });
  });

  it('a file created while a removed one is still open never shares its data file', async () => {
    const vault = await openVault();
    const a = await vault.openFile('a', null, attrs);
    await a.write(0, Buffer.alloc(200 * KiB, 0x61));
    await a.commit();
    vault.removeRecord('a'); // unlinked while open: its handles keep reading it
    const b = await vault.openFile('b', null, attrs); // the next record may take the same id
    await b.write(100 * KiB, Buffer.from('bee'));
    expect((await a.read(0, 3)).toString()).toBe('aaa');
    await vault.closeFile(a); // the removed file's data goes now, and only its
    expect((await b.read(0, 3)).equals(Buffer.alloc(3))).toBe(true); // never a's bytes
    expect((await b.read(100 * KiB, 3)).toString()).toBe('bee');
    await b.commit();
    await vault.closeFile(b);
    const b2 = await vault.openFile('b', null, attrs);
    expect(b2.size).toBe(100 * KiB + 3);
    expect((await b2.read(100 * KiB, 3)).toString()).toBe('bee');
    await vault.closeFile(b2);
    await vault.close();
  });

  it('new files get the data files made ahead for them; a clean close leaves only the records\' files', async () => {
    const vault = await openVault();
    const ids: number[] = [];
    for (let i = 0; i < 20; i++) {
      const f = await vault.openFile(`f${i}`, null, attrs);
      await f.write(0, Buffer.from(`file ${i}`));
      await f.commit();
      ids.push(f.rec.id);
      await vault.closeFile(f);
      await new Promise((resolve) => setTimeout(resolve, 5)); // the spares are made meanwhile, as between requests
    }
    // Some were made ahead, and none is anyone's yet: more data files than records while the vault is open.
    expect(readdirSync(path.join(dir, 'data')).length).toBeGreaterThan(20);
    await vault.close();
    expect(readdirSync(path.join(dir, 'data')).map(Number).sort((a, b) => a - b)).toEqual([...ids].sort((a, b) => a - b));
    const again = await openVault();
    for (let i = 0; i < 20; i++) {
      const f = await again.openFile(`f${i}`, null, attrs);
      expect((await f.read(0, 64)).toString()).toBe(`file ${i}`);
      await again.closeFile(f);
    }
    await again.close();
  });

  it('rename and remove move or drop a record; a removed open file is never uploaded', async () => {
    const vault = await openVault();
    const f = await vault.openFile('a', null, attrs);
    await f.write(0, Buffer.from('x'));
    vault.renameFile('a', 'b');
    expect(vault.record('a')).toBeUndefined();
    expect(vault.record('b')?.size).toBe(1);
    vault.removeRecord('b');
    expect(await f.upload()).toBe('nothing');
    await vault.closeFile(f);
    expect(storage.objects.size).toBe(0);
    await vault.close();
  });

  it('a prefix found without records answers look-ups under it without a query, until a record is made or renamed there', async () => {
    const vault = await openVault();
    const statements = (vault as unknown as { statements: { known: Map<string, unknown>; s: { byKey: { get: (k: string) => unknown } } } }).statements;
    let queries = 0;
    const byKey = statements.s.byKey.get.bind(statements.s.byKey);
    statements.s.byKey.get = (k) => {
      queries++;
      return byKey(k);
    };
    const written = async (key: string) => {
      const f = await vault.openFile(key, null, attrs);
      await f.write(0, Buffer.from('x'));
      await vault.closeFile(f);
    };
    await written('a/x');
    queries = 0;
    expect(vault.recordsUnder('d/')).toEqual([]);
    expect(vault.recordsUnder('e/')).toEqual([]);
    expect(vault.record('d/x')).toBeUndefined();
    expect(vault.record('d/sub/y')).toBeUndefined();
    expect(queries).toBe(0);
    // Made there, and renamed there: found again, even once the records kept in memory are forgotten.
    await written('d/x');
    vault.renameFile('a/x', 'e/y');
    statements.known.clear();
    expect(vault.record('d/x')?.size).toBe(1);
    expect(vault.record('e/y')?.size).toBe(1);
    expect(vault.record('e/z')).toBeUndefined();
    expect(queries).toBe(3);
    await vault.close();
  });
});

/** Storage that writes ranged reads into the data file itself, as libcurl does for S3. */
class FileWritingStorage extends MemoryStorage {
  async readToFile(key: string, offset: number, length: number, etag: string, fd: number, fileOffset: number): Promise<boolean> {
    const r = await this.read(key, offset, length, etag);
    if (r.data.length < length) return false;
    writeSync(fd, r.data, 0, r.data.length, fileOffset);
    return true;
  }
}

describe('vault: checksums of blocks storage wrote into the data file', () => {
  const bs = 64 * KiB;
  const data = pattern(5 * bs + 1000);
  const sumAt = (buf: Buffer, b: number) => blockSum(buf.subarray(b * bs, Math.min(buf.length, (b + 1) * bs)));
  const rows = (): { idx: number; state: number; sum: string | null }[] => {
    const db = new Database(path.join(dir, 'vault.db'), { readonly: true });
    try {
      return db.prepare('SELECT idx, state, sum FROM blocks ORDER BY idx').all() as { idx: number; state: number; sum: string | null }[];
    } finally {
      db.close();
    }
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  beforeEach(async () => {
    await initChecksums();
    storage = new FileWritingStorage();
  });

  it('are left out while the fetch lands and computed once the vault is idle, the last block short', async () => {
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    expect(await f.read(0, data.length)).toEqual(data);
    expect(rows().map((r) => r.sum)).toEqual(Array(6).fill(null));
    await sleep(1200);
    expect(rows()).toEqual([...Array(6).keys()].map((b) => ({ idx: b, state: 1, sum: sumAt(data, b) })));
    await vault.close();
  });

  it('a block written before its turn keeps the checksum of what was written', async () => {
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    await f.read(0, data.length);
    const changed = Buffer.from(data);
    changed.fill(0x5a, bs + 10, bs + 5000);
    await f.write(bs + 10, changed.subarray(bs + 10, bs + 5000));
    await sleep(1200);
    // Not committed yet: the journal still says clean, and must not vouch for the new bytes as storage's.
    expect(rows()[1]).toEqual({ idx: 1, state: 1, sum: null });
    await f.commit();
    const r = rows();
    expect(r[1]).toEqual({ idx: 1, state: 2, sum: sumAt(changed, 1) });
    for (const b of [0, 2, 3, 4, 5]) expect(r[b], `block ${b}`).toEqual({ idx: b, state: 1, sum: sumAt(data, b) });
    await vault.close();
  });

  it('a file closed before its turn is summed from its data file; a clean close sums the rest', async () => {
    storage.putObject('g', pattern(2 * bs));
    const etag = storage.putObject('f', data);
    const vault = await openVault();
    const f = await vault.openFile('f', { etag, size: data.length }, attrs);
    await f.read(0, data.length);
    await vault.closeFile(f);
    await sleep(1200);
    expect(rows().map((r) => r.sum)).toEqual([...Array(6).keys()].map((b) => sumAt(data, b)));
    const g = await vault.openFile('g', { etag: storage.objects.get('g')!.etag, size: 2 * bs }, attrs);
    await g.read(0, 2 * bs);
    await vault.close(); // before the vault was idle long enough
    expect(rows().filter((r) => r.sum === null)).toEqual([]);
  });
});
