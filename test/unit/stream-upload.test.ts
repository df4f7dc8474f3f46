/**
 * Stream uploads on in-memory storage: parts go while a file is written, the upload at close completes with
 * them, a part rewritten after it went is sent again, changed metadata drops the stream, and a crash's stream
 * upload is aborted at the next start.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Vault } from '../../src/cache/vault.js';
import type { CachedFile, FileAttrs } from '../../src/cache/cached-file.js';
import { MemoryStorage } from '../../src/storage/memory.js';

const KiB = 1024;
const PART = 64 * KiB;
const attrs = { mode: 0o644, uid: 1, gid: 2, mtimeMs: 1_000_000 };
let dir: string;
let storage: MemoryStorage;

/** The object's metadata as the owner gives it (with mtime) and as a stream starts it (without). */
const full = (a: FileAttrs) => ({ meta: { mode: String(a.mode), mtime: String(a.mtimeMs) } });
const streamed = (a: FileAttrs) => ({ meta: { mode: String(a.mode) } });

function openVault(): Promise<Vault> {
  return Vault.open({ dir, storage, blockSize: 16 * KiB, objectMeta: full, streamMeta: streamed, flushAfterCloseMs: 60_000 });
}

function pattern(size: number, seed = 1): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 12)) & 0xff;
  return b;
}

/** Write `data` in 16 KiB pieces as a program would, letting the stream send what the writer moved past. */
async function writeStreaming(f: CachedFile, data: Buffer, from = 0): Promise<void> {
  for (let at = from; at < data.length; at += 16 * KiB) {
    await f.write(at, data.subarray(at, at + 16 * KiB));
    f.pumpStream();
  }
  // Let the parts in flight land, pumping as the budget frees up.
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 2));
    f.pumpStream();
  }
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-stream-'));
  storage = new MemoryStorage(PART);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('stream uploads', () => {
  it('sends parts while the file is written; the upload completes with them and sends only the tail', async () => {
    const data = pattern(10 * PART + 5000);
    const vault = await openVault();
    const f = await vault.openFile('big.bin', null, attrs);
    await writeStreaming(f, data);
    // Parts 1-9: each once the writer was a whole part past it. Nothing published yet.
    expect(storage.calls.putPart).toBe(9);
    expect(storage.objects.has('big.bin')).toBe(false);
    expect(await f.upload()).toBe('uploaded');
    expect(storage.objects.get('big.bin')!.data.equals(data)).toBe(true);
    expect(storage.calls.putPart).toBe(11); // + part 10 and the short part 11
    expect(storage.calls.completeMultipart).toBe(1);
    expect(storage.calls.put).toBeUndefined();
    // The metadata the stream started with: no mtime (LastModified stands for it).
    expect(storage.objects.get('big.bin')!.meta).toEqual({ mode: '420' });
    expect(storage.uploads.size).toBe(0);
    await vault.closeFile(f);
    await vault.close();
  });

  it('a part that lands starts the next at once, without waiting for the next tick', async () => {
    const data = pattern(10 * PART);
    const vault = await openVault();
    const f = await vault.openFile('flow.bin', null, attrs);
    await f.write(0, data);
    f.pumpStream(); // one tick: 4 parts in flight at most (the budget)
    // Well within the vault's own first tick (200 ms after it opened).
    for (let i = 0; i < 50 && (storage.calls.putPart ?? 0) < 9; i++) await new Promise((r) => setTimeout(r, 2));
    // Parts 1-9 (the writer is a part past each) went on that one tick, four at a time.
    expect(storage.calls.putPart).toBe(9);
    expect(await f.upload()).toBe('uploaded');
    expect(storage.objects.get('flow.bin')!.data.equals(data)).toBe(true);
    expect(storage.calls.putPart).toBe(10);
    await vault.closeFile(f);
    await vault.close();
  });

  it('no second stream starts while the file is being uploaded (the ticker keeps pumping meanwhile)', async () => {
    const data = pattern(10 * PART + 5000);
    const vault = await openVault();
    const f = await vault.openFile('busy.bin', null, attrs);
    await writeStreaming(f, data);
    expect(storage.calls.startMultipart).toBe(1);
    // The vault's ticker goes on while the upload runs (storage takes its time, as a network does): the file is
    // still dirty and many parts long.
    const write = storage.write.bind(storage);
    storage.write = async (...args) => {
      await new Promise((r) => setTimeout(r, 30));
      return write(...args);
    };
    let pumping = true;
    const ticker = (async () => {
      while (pumping) {
        f.pumpStream();
        await new Promise((r) => setImmediate(r));
      }
    })();
    expect(await f.upload()).toBe('uploaded');
    pumping = false;
    await ticker;
    expect(storage.objects.get('busy.bin')!.data.equals(data)).toBe(true);
    // One multipart upload, each part sent once, nothing left open in storage.
    expect(storage.calls.startMultipart).toBe(1);
    expect(storage.calls.putPart).toBe(11);
    expect(storage.uploads.size).toBe(0);
    await vault.closeFile(f);
    await vault.close();
  });

  it('a part rewritten after it went is sent again; the object is what the file holds', async () => {
    const data = pattern(8 * PART);
    const vault = await openVault();
    const f = await vault.openFile('re.bin', null, attrs);
    await writeStreaming(f, data);
    expect(storage.calls.putPart).toBe(7);
    const patch = Buffer.from('changed after its part went');
    patch.copy(data, PART + 100);
    await f.write(PART + 100, patch);
    expect(await f.upload()).toBe('uploaded');
    expect(storage.objects.get('re.bin')!.data.equals(data)).toBe(true);
    expect(storage.calls.putPart).toBe(9); // part 2 again, and part 8
    await vault.closeFile(f);
    await vault.close();
  });

  it('an mtime set explicitly after the stream began drops it: the object goes whole, with that mtime', async () => {
    const data = pattern(6 * PART);
    const vault = await openVault();
    const f = await vault.openFile('kept.bin', null, attrs);
    await writeStreaming(f, data);
    expect(storage.calls.putPart).toBe(5);
    f.setAttrs({ mtimeMs: 42_000 }); // what cp -p and rsync -t do after the data
    expect(await f.upload()).toBe('uploaded');
    expect(storage.calls.abortMultipart).toBe(1);
    expect(storage.calls.put).toBe(1);
    expect(storage.objects.get('kept.bin')!.data.equals(data)).toBe(true);
    expect(storage.objects.get('kept.bin')!.meta).toEqual({ mode: '420', mtime: '42000' });
    expect(storage.uploads.size).toBe(0);
    await vault.closeFile(f);
    await vault.close();
  });

  it('a file with an older object to fetch from, or a small one, does not stream', async () => {
    const old = pattern(6 * PART, 3);
    const etag = storage.putObject('old.bin', old);
    const vault = await openVault();
    const f = await vault.openFile('old.bin', { etag, size: old.length }, attrs);
    await writeStreaming(f, pattern(6 * PART, 4).subarray(0, PART)); // rewrites the first part only
    const g = await vault.openFile('small.bin', null, attrs);
    await writeStreaming(g, pattern(2 * PART + 10));
    expect(storage.calls.putPart).toBeUndefined();
    await vault.closeFile(f);
    await vault.closeFile(g);
    await vault.close();
  });

  it('a removed file aborts its stream; a crash leaves one that the next start aborts', async () => {
    let vault = await openVault();
    const gone = await vault.openFile('gone.bin', null, attrs);
    await writeStreaming(gone, pattern(4 * PART));
    vault.removeRecord('gone.bin');
    await new Promise((r) => setTimeout(r, 20));
    expect(storage.calls.abortMultipart).toBe(1);
    const f = await vault.openFile('crash.bin', null, attrs);
    await writeStreaming(f, pattern(5 * PART));
    expect(storage.uploads.size).toBe(1);
    await f.commit();
    await vault.simulateCrash();
    writeFileSync(path.join(dir, 'vault.lock'), '999999');
    vault = await openVault();
    await new Promise((r) => setTimeout(r, 20));
    expect(storage.uploads.size).toBe(0);
    expect(storage.calls.abortMultipart).toBe(2);
    // The orphan itself is uploaded whole, as any orphan (the write-back takes it at the start).
    for (let i = 0; i < 100 && !storage.objects.has('crash.bin'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(storage.objects.get('crash.bin')!.data.equals(pattern(5 * PART))).toBe(true);
    await vault.close();
  });
});
