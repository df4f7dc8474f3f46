/** The write-back queue on in-memory storage with injected faults: retries, error states, power, conflicts, back-pressure. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FLUSH } from '../../src/cache/constants.js';
import { Vault, type VaultOptions } from '../../src/cache/vault.js';
import { WriteBack, type WriteBackOptions } from '../../src/cache/writeback.js';
import { Maintenance } from '../../src/fs/mirror/maintenance.js';
import { silentLogger } from '../../src/log.js';
import { FaultyStorage } from '../../src/storage/faulty.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { PoweredStorage } from '../../src/storage/power.js';
import { RWRESULT, StorageError } from '../../src/storage/rwresult.js';

const attrs = { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let dir: string;
let memory: MemoryStorage;
let faulty: FaultyStorage;
let vault: Vault;

async function open(extra: Partial<VaultOptions> = {}, storage: FaultyStorage | PoweredStorage = faulty): Promise<Vault> {
  vault = await Vault.open({ dir, storage, flushAfterCloseMs: 20, retryBaseMs: 20, retryMaxMs: 80, ...extra });
  return vault;
}

async function change(key: string, text: string): Promise<void> {
  const rec = vault.record(key);
  const f = await vault.openFile(key, rec?.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null, attrs);
  await f.setSize(0);
  await f.write(0, Buffer.from(text));
  await vault.closeFile(f, { flush: FLUSH.DELAYED });
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}

const text = (key: string) => memory.objects.get(key)?.data.toString();

/** A write-back queue alone (no vault): quick retries, no log. */
const bareQueue = (o: Pick<WriteBackOptions, 'concurrency' | 'delayMs' | 'upload'>) => new WriteBack({ retryBaseMs: 10, retryMaxMs: 10, log: silentLogger, ...o });

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-wb-'));
  memory = new MemoryStorage();
  faulty = new FaultyStorage(memory);
});
afterEach(async () => {
  await vault?.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe('write-back queue', () => {
  it('uploads after the delay, not before', async () => {
    await open({ flushAfterCloseMs: 150 });
    await change('a', 'A');
    await sleep(50);
    expect(text('a')).toBeUndefined();
    await until(() => text('a') === 'A');
  });

  it('retries transient failures (FAILURE) with growing delays until they succeed', async () => {
    await open();
    faulty.failNext('write', RWRESULT.FAILURE, 3);
    await change('a', 'A');
    await until(() => text('a') === 'A' && vault.queue().length === 0);
    expect(faulty.pendingFailures()).toBe(0); // all three failures happened and were retried
  });

  it('FILE_FAILURE stops that file only, until the error is reset', async () => {
    await open();
    faulty.failNext('write', RWRESULT.FILE_FAILURE, 1);
    await change('bad', 'B');
    await until(() => vault.queue().some((q) => q.key === 'bad' && q.state === 'failed'));
    await change('good', 'G');
    await until(() => text('good') === 'G');
    await sleep(100);
    expect(text('bad')).toBeUndefined();
    expect(vault.status().find((s) => s.key === 'bad')!.lastError).toBe(RWRESULT.FILE_FAILURE);
    vault.resetErrorState('bad');
    await until(() => text('bad') === 'B');
  });

  it('a file changed while its upload runs is uploaded again; the older upload never wins', async () => {
    await open();
    faulty.delay('write', 150);
    await change('a', 'first');
    await sleep(60); // the upload of "first" is in flight
    await change('a', 'second');
    await until(() => text('a') === 'second' && vault.queue().length === 0);
    await sleep(200);
    expect(text('a')).toBe('second');
  });

  it('an upload whose answer was lost (it landed) is recognised on retry, not taken for a conflict', async () => {
    await open();
    faulty.loseAnswerNext(1);
    await change('a', 'landed anyway');
    await until(() => vault.queue().length === 0);
    expect(text('a')).toBe('landed anyway');
    expect(vault.conflicts).toEqual([]);
    expect(vault.record('a')?.dirty).toBe(false);
  });

  it('an upload cut short half-way, whose remains the server kept, is replaced on retry, not taken for a conflict', async () => {
    await open();
    faulty.cutShortNext(1);
    await change('b', 'whole content');
    await until(() => vault.queue().length === 0);
    expect(text('b')).toBe('whole content');
    expect(vault.conflicts).toEqual([]);
  });

  it('an upload cut short by a crash of s3vault, whose remains the server kept, is replaced after the restart, not taken for a conflict', async () => {
    await open({ retryBaseMs: 60_000, retryMaxMs: 60_000 });
    faulty.cutShortNext(1);
    await change('c', 'whole content');
    await until(() => memory.objects.has('c')); // what the server kept of the attempt
    await vault.simulateCrash(); // kill -9: the retry never comes, the memory of the attempt is gone
    writeFileSync(path.join(dir, 'vault.lock'), '999999');
    await open();
    expect(vault.orphans.map((r) => r.key)).toEqual(['c']);
    await vault.flushAll();
    expect(text('c')).toBe('whole content');
    expect(vault.conflicts).toEqual([]);
    expect(vault.listTags('c').map((t) => t.id)).toEqual([0xc001]); // the ETag; the attempt's stamp is hidden
  });

  it('pauses while the storage is offline and drains in order when it returns', async () => {
    const powered = new PoweredStorage(faulty, { probeMs: 30, maxProbeMs: 60 });
    await open({}, powered);
    faulty.reachable(false);
    await change('one', '1');
    await until(() => powered.power === 'offline');
    await change('two', '2');
    await sleep(150);
    expect(memory.objects.size).toBe(0);
    expect(vault.queue().map((q) => q.key)).toEqual(['one', 'two']);
    faulty.reachable(true);
    await until(() => text('one') === '1' && text('two') === '2');
    expect(powered.power).toBe('online');
  });

  it('`s3vault flush --wait` while the mount thinks storage is offline asks it first: back already, the files go at once', async () => {
    // The next probe is a minute away, as after an outage of several minutes (the interval doubles up to 15 s).
    const powered = new PoweredStorage(faulty, { probeMs: 60_000, maxProbeMs: 60_000 });
    await open({}, powered);
    faulty.reachable(false);
    await change('one', '1');
    await until(() => powered.power === 'offline');
    faulty.reachable(true);
    // Before: it waited for that probe (or failed with "storage offline" when deletes were waiting too).
    await new Maintenance(vault, { uid: 0, gid: 0 }).flush('/', true, () => undefined);
    expect([text('one'), powered.power]).toEqual(['1', 'online']);
  }, 10_000);

  it('a key the server answers 500 for is retried alone: the storage stays online and the other files upload', async () => {
    const powered = new PoweredStorage(faulty, { probeMs: 30, maxProbeMs: 60 });
    const states: string[] = [];
    powered.onPower((s) => states.push(s));
    await open({}, powered);
    faulty.failWritesOf('bad', RWRESULT.FAILURE, 500);
    await change('bad', 'B');
    await change('good', 'G');
    await until(() => text('good') === 'G');
    await until(() => (vault.queue().find((q) => q.key === 'bad')?.attempts ?? 0) >= 3);
    expect(states).toEqual([]);
    expect(powered.power).toBe('online');
    expect(text('bad')).toBeUndefined();
    faulty.failWritesOf('bad');
    await until(() => text('bad') === 'B');
    // The same failure without an answer (the server out of reach) still takes the storage offline.
    faulty.failWritesOf('later', RWRESULT.FAILURE);
    await change('later', 'L');
    await until(() => powered.power === 'offline');
    faulty.failWritesOf('later');
    await until(() => text('later') === 'L');
  });

  it('keep-both: an object changed in storage meanwhile is kept, the local version saved beside it', async () => {
    await open();
    await change('doc', 'v1');
    await until(() => text('doc') === 'v1');
    memory.putObject('doc', 'changed by someone else');
    await change('doc', 'local edit');
    await until(() => vault.conflicts.length === 1);
    const c = vault.conflicts[0]!;
    expect(c.conflictKey).toMatch(/^doc\.conflict-\d{8}T\d{6}Z$/);
    expect(text('doc')).toBe('changed by someone else');
    expect(text(c.conflictKey!)).toBe('local edit');
  });

  it('local-wins and remote-wins', async () => {
    await open({ conflictPolicy: 'local-wins' });
    await change('doc', 'v1');
    await until(() => text('doc') === 'v1');
    memory.putObject('doc', 'theirs');
    await change('doc', 'mine');
    await until(() => text('doc') === 'mine');
    await vault.close();
    await open({ conflictPolicy: 'remote-wins' });
    memory.putObject('doc', 'theirs again');
    await change('doc', 'mine again');
    await until(() => vault.conflicts.length === 1);
    expect(text('doc')).toBe('theirs again');
    expect(vault.record('doc')).toBeUndefined();
  });

  it('an attribute-only change of an open file uploads no data: the object is copied onto itself', async () => {
    await open({ objectMeta: (a) => ({ meta: { mode: String(a.mode) } }) });
    await change('f', 'data');
    await until(() => text('f') === 'data' && vault.queue().length === 0);
    const puts = memory.calls.put ?? 0;
    const copies = memory.calls.copy ?? 0;
    const rec = vault.record('f')!;
    const f = await vault.openFile('f', { etag: rec.remoteEtag!, size: rec.size }, attrs);
    f.setAttrs({ mode: 0o600 });
    await vault.closeFile(f, { flush: FLUSH.DELAYED });
    await until(() => vault.queue().length === 0 && memory.objects.get('f')!.meta.mode === '384');
    expect(memory.calls.put ?? 0).toBe(puts);
    expect(memory.calls.copy).toBe(copies + 1);
    expect(text('f')).toBe('data');
  });

  it('a file whose data cannot be opened any more stops with FILE_FAILURE instead of retrying for ever', async () => {
    await open({ flushAfterCloseMs: 60_000 });
    await change('a', 'kept in the vault');
    rmSync(path.join(dir, 'data'), { recursive: true, force: true }); // the vault's data deleted under the mount
    await expect(vault.flushFile('a')).rejects.toThrow(/FILE_FAILURE/);
    expect(vault.queue().find((q) => q.key === 'a')?.state).toBe('failed');
    expect(vault.record('a')?.dirty).toBe(true); // nothing dropped: the record waits for a repair and reset-errors
    expect(memory.objects.has('a')).toBe(false);
  });

  it('back-pressure: writers wait while closed changes waiting for upload pass the budget', async () => {
    await open({ dirtyBudget: 1024 * 1024, flushAfterCloseMs: 300 });
    await change('big', 'x'.repeat(2 * 1024 * 1024));
    const f = await vault.openFile('next', null, attrs);
    const started = Date.now();
    await f.write(0, Buffer.from('waits'));
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    expect(text('big')).toHaveLength(2 * 1024 * 1024);
    await vault.closeFile(f);
  });
});

describe('write-back while changed files keep closing', () => {
  /** Close a changed file every `everyMs` for `forMs` (f0, f1, …), as a copy or an unpack does; resolves when done. */
  async function keepClosing(forMs: number, everyMs: number, size = 1): Promise<number> {
    const end = Date.now() + forMs;
    let n = 0;
    while (Date.now() < end) {
      await change(`f${n++}`, 'x'.repeat(size));
      await sleep(everyMs);
    }
    return n;
  }

  it('uploads wait until the closes stop, then all go', async () => {
    await open({ flushAfterCloseMs: 100, flushMaxDelayMs: 10_000 });
    const closing = keepClosing(700, 30);
    // f0's delay ran out long ago, but files are still closing.
    await sleep(450);
    expect(text('f0')).toBeUndefined();
    const n = await closing;
    await until(() => Array.from({ length: n }, (_, i) => text(`f${i}`)).every((t) => t === 'x'));
  });

  it('no file waits longer than the max delay after its close', async () => {
    await open({ flushAfterCloseMs: 50, flushMaxDelayMs: 300 });
    const closing = keepClosing(1500, 20);
    // Within 1 s, while files go on closing for 1.5 s.
    await until(() => text('f0') === 'x', 1000);
    await closing;
  });

  it('a flush (fsync, s3vault flush) does not wait for the closes to stop', async () => {
    await open({ flushAfterCloseMs: 100, flushMaxDelayMs: 10_000 });
    const closing = keepClosing(1500, 30);
    await sleep(100);
    await change('wanted', 'now');
    const started = Date.now();
    await vault.flushFile('wanted');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(text('wanted')).toBe('now');
    await closing;
  });

  it('past half the dirty budget, uploads go while files still close', async () => {
    await open({ flushAfterCloseMs: 50, flushMaxDelayMs: 10_000, dirtyBudget: 1024 * 1024 });
    const closing = keepClosing(1500, 30, 200 * 1024);
    await until(() => text('f0') !== undefined, 1200);
    await closing;
  });
});

describe('write-back queue order', () => {
  it('uploads in due order, whatever order files were scheduled in, one slot at a time', async () => {
    const done: string[] = [];
    const q = bareQueue({
      concurrency: 1,
      delayMs: 0,
      upload: async (key) => {
        await sleep(2);
        done.push(key);
        return 'uploaded';
      },
    });
    // Later-due files scheduled first, then a run in order (the end of the queue grows without a re-sort),
    // then one due before all of them and a re-armed one.
    q.schedule('late', 1, 200);
    q.schedule('later', 1, 250);
    for (let i = 0; i < 20; i++) q.schedule(`f${String(i).padStart(2, '0')}`, 1, 100 + i);
    q.schedule('first', 1, 60);
    q.schedule('f05', 1, 300); // re-armed: now the last
    await until(() => done.length === 23);
    const expected = ['first', ...Array.from({ length: 20 }, (_, i) => `f${String(i).padStart(2, '0')}`).filter((k) => k !== 'f05'), 'late', 'later', 'f05'];
    expect(done).toEqual(expected);
    q.stop();
  });
});

describe('write-back queue bytes', () => {
  it('pendingBytes stays the sum of the waiting and uploading files through every change, and a flush of many files runs them all', async () => {
    const failing = new Set(['bad']);
    const q = bareQueue({
      concurrency: 4,
      delayMs: 50,
      upload: async (key) => {
        await sleep(5);
        if (failing.has(key)) throw new StorageError(RWRESULT.FILE_FAILURE, 'write', key, 'refused');
        return 'uploaded';
      },
    });
    const sum = () => q.entries().reduce((n, e) => n + (e.state === 'failed' ? 0 : e.size), 0);
    q.schedule('a', 100);
    q.schedule('b', 200);
    q.schedule('a', 150); // grew
    q.schedule('c', 7);
    q.move('c', 'b'); // replaces b
    q.drop('a');
    q.schedule('bad', 1000);
    expect(q.pendingBytes).toBe(sum());
    expect(q.pendingBytes).toBe(1007);
    await q.flush('bad', 1000).catch(() => undefined); // FILE_FAILURE: no longer pending
    expect(q.pendingBytes).toBe(sum());
    expect(q.pendingBytes).toBe(7);
    failing.clear();
    expect(q.resetErrors('bad')).toBe(1);
    expect(q.pendingBytes).toBe(1007);
    // Many files flushed in one turn: all upload, and the count comes back to nothing.
    const flushes = Array.from({ length: 200 }, (_, i) => q.flush(`f${i}`, 10));
    expect(q.pendingBytes).toBe(sum());
    await Promise.all(flushes);
    await until(() => q.entries().length === 0);
    expect(q.pendingBytes).toBe(0);
    q.stop();
  });
});
