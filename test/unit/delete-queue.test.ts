/** The delete queue on a real SQLite journal, with in-memory storage: batching, ordering, failures, restarts. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../src/cache/db.js';
import { DeleteQueue, type DeleteQueueOptions } from '../../src/cache/delete-queue.js';
import { silentLogger } from '../../src/log.js';
import { RWRESULT, StorageError } from '../../src/storage/rwresult.js';

let dir: string;
let db: Db;

/** Storage that records each DeleteObjects and can hold or fail the next ones. */
function storage() {
  const batches: string[][] = [];
  let hold: Promise<void> | undefined;
  const failures: StorageError[] = [];
  return {
    batches,
    holdNext(p: Promise<void>) {
      hold = p;
    },
    failNext(err: StorageError) {
      failures.push(err);
    },
    async deleteMany(keys: string[]) {
      const h = hold;
      hold = undefined;
      if (h) await h;
      const f = failures.shift();
      if (f) throw f;
      batches.push([...keys]);
    },
  };
}

function queue(s: ReturnType<typeof storage>, o: Partial<DeleteQueueOptions> = {}): DeleteQueue {
  return new DeleteQueue(db, s, { delayMs: 60_000, retryBaseMs: 10, retryMaxMs: 20, onDeleted: () => undefined, onRefused: () => undefined, log: silentLogger, ...o });
}

const rows = (): string[] => (db.prepare('SELECT key FROM deletes ORDER BY key').all() as { key: string }[]).map((r) => r.key);

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-deletes-'));
  db = openDatabase(path.join(dir, 'vault.db'));
});
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('delete queue', () => {
  it('journals each delete at once and sends them 1000 to a request; a row goes only once storage confirmed it', async () => {
    const s = storage();
    const done: string[] = [];
    const q = queue(s, { onDeleted: (keys) => done.push(...keys) });
    for (let i = 0; i < 2500; i++) q.add(`d/f${String(i).padStart(4, '0')}`);
    expect([q.size, rows().length, s.batches.length]).toEqual([2500, 2500, 0]);
    await q.flush();
    expect(s.batches.map((b) => b.length)).toEqual([1000, 1000, 500]);
    expect(s.batches[0]![0]).toBe('d/f0000'); // oldest first
    expect([q.size, rows(), done.length]).toEqual([0, [], 2500]);
    q.stop();
  });

  it('a full batch goes by itself; fewer wait for the delay', async () => {
    const s = storage();
    const q = queue(s, { delayMs: 30 });
    q.add('a');
    await new Promise((r) => setTimeout(r, 5));
    expect(s.batches).toEqual([]);
    await new Promise((r) => setTimeout(r, 80));
    expect(s.batches).toEqual([['a']]);
    const big = queue(s, { delayMs: 60_000 });
    for (let i = 0; i < 1000; i++) big.add(`k${i}`);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.batches.at(-1)).toHaveLength(1000);
    q.stop();
    big.stop();
  });

  it('settle waits for the batch in flight; a key journaled again meanwhile keeps its row and goes again', async () => {
    const s = storage();
    const q = queue(s);
    q.add('x');
    q.add('y');
    let release!: () => void;
    s.holdNext(new Promise<void>((r) => (release = r)));
    const first = q.flush();
    await new Promise((r) => setImmediate(r));
    q.add('x'); // removed again while its first delete is on its way (a file made and removed meanwhile)
    expect(q.has('x')).toBe(true);
    release();
    await first;
    expect([q.has('x'), q.has('y'), rows()]).toEqual([true, false, ['x']]);
    await q.settle('x');
    expect([s.batches, rows()]).toEqual([[['x', 'y'], ['x']], []]);
    q.stop();
  });

  it('flush sends what was journaled before it, not what comes after', async () => {
    const s = storage();
    const q = queue(s);
    q.add('before');
    let release!: () => void;
    s.holdNext(new Promise<void>((r) => (release = r)));
    const flushed = q.flush();
    await new Promise((r) => setImmediate(r));
    q.add('after');
    release();
    await flushed;
    expect([s.batches, q.has('after')]).toEqual([[['before']], true]);
    q.stop();
  });

  it('transient failures are retried; a refusal for good drops the deletes and says so; the journal survives a restart', async () => {
    const s = storage();
    const refused: string[] = [];
    const q = queue(s, { delayMs: 1, onRefused: (keys) => refused.push(...keys) });
    s.failNext(new StorageError(RWRESULT.FAILURE, 'delete', 'a', 'connection reset'));
    q.add('a');
    await expect(q.settle('a')).rejects.toThrow(/connection reset/);
    for (let i = 0; i < 50 && q.has('a'); i++) await new Promise((r) => setTimeout(r, 10)); // the retry timer
    expect([q.has('a'), s.batches]).toEqual([false, [['a']]]);
    s.failNext(new StorageError(RWRESULT.FILE_FAILURE, 'delete', 'b', 'AccessDenied'));
    q.add('b');
    await q.flush();
    expect([q.has('b'), refused, rows()]).toEqual([false, ['b'], []]);
    q.stop();
    // Journaled, never sent, process gone: the next queue on the same vault has them.
    const before = queue(s);
    before.add('kept/1');
    before.add('kept/2');
    before.stop();
    const after = queue(s);
    expect([after.size, after.has('kept/1')]).toEqual([2, true]);
    after.start();
    await after.flush();
    expect(s.batches.at(-1)).toEqual(['kept/1', 'kept/2']);
    after.stop();
  });
});
