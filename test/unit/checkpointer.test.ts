/** WAL checkpoints on a worker thread: the committing connection never checkpoints, and the WAL stays bounded. */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Checkpointer } from '../../src/cache/checkpointer.js';
import { openDatabase, type Db } from '../../src/cache/db.js';
import { Vault } from '../../src/cache/vault.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { silentLogger } from '../../src/log.js';

let dir: string;
let file: string;
let db: Db;

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-ckpt-'));
  file = path.join(dir, 'vault.db');
  db = openDatabase(file);
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)');
});
afterEach(() => {
  if (db.open) db.close();
  rmSync(dir, { recursive: true, force: true });
});

const size = (f: string) => (existsSync(f) ? statSync(f).size : 0);
const insertMany = (n: number) => {
  const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
  // One commit each, as the vault's records are committed: every one adds pages to the WAL.
  for (let i = 0; i < n; i++) ins.run(Buffer.alloc(2000, i));
};
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

describe('vault checkpoints on a worker thread', () => {
  it('copies committed pages into the database without the committing connection checkpointing', async () => {
    const ckpt = Checkpointer.start(db, file, silentLogger, { intervalMs: 50 })!;
    expect(ckpt).toBeDefined();
    try {
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
      const before = size(file);
      insertMany(3000);
      // With automatic checkpoints off on this connection, only the worker can have grown the database file.
      expect(await until(() => size(file) > before + 3000 * 2000, 5000)).toBe(true);
      expect(db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 3000 });
    } finally {
      await ckpt.stop();
    }
  });

  it('keeps the WAL bounded while commits never pause: the main thread checkpoints once past the bound', async () => {
    const maxWalBytes = 1024 * 1024;
    const ckpt = Checkpointer.start(db, file, silentLogger, { intervalMs: 20, maxWalBytes })!;
    try {
      await ckpt.ready;
      let largest = 0;
      // Commits without a pause long enough for a passive checkpoint to finish, as a long `tar x` makes them.
      for (let round = 0; round < 120; round++) {
        insertMany(100);
        largest = Math.max(largest, size(`${file}-wal`));
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setTimeout(r, 5));
      }
      // 12 000 rows of 2 KB: about 30 MB went through the WAL.
      expect(size(file)).toBeGreaterThan(20 * 1024 * 1024);
      expect(largest).toBeLessThan(8 * maxWalBytes);
      // Once the main thread has checkpointed, the next commit starts the WAL over and cuts its file back.
      expect(await until(() => (insertMany(1), size(`${file}-wal`) <= maxWalBytes), 5000)).toBe(true);
    } finally {
      await ckpt.stop();
    }
  });

  it('stops: the worker closes its connection and the database closes cleanly after it', async () => {
    const ckpt = Checkpointer.start(db, file, silentLogger, { intervalMs: 50 })!;
    insertMany(100);
    await ckpt.stop();
    db.close();
    // The last connection closed checkpoints and removes the WAL: nothing else holds the database.
    expect(existsSync(`${file}-wal`)).toBe(false);
    const again = openDatabase(file);
    expect(again.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 100 });
    again.close();
  });

  it('a vault checkpoints off its main thread, loses no commit across a close, and closes while orphans upload', async () => {
    db.close();
    const vdir = path.join(dir, 'v');
    const storage = new MemoryStorage();
    const vault = await Vault.open({ dir: vdir, storage, blockSize: 64 * 1024, checkpoints: { intervalMs: 20 } });
    const vdb = path.join(vdir, 'vault.db');
    const before = size(vdb);
    for (let i = 0; i < 300; i++) {
      const f = await vault.openFile(`d/f${i}`, null, { mode: 0o644, uid: 1, gid: 2, mtimeMs: 1_000_000 });
      await f.write(0, Buffer.alloc(100, i));
      await vault.closeFile(f);
    }
    expect(await until(() => size(vdb) > before, 5000)).toBe(true);
    await vault.close();
    // Reopened, the 300 changed files go to upload at once; closed right away, the vault waits for the uploads
    // under way (it used to close their data files under them: EBADF at the upload's own close).
    const reopened = await Vault.open({ dir: vdir, storage, blockSize: 64 * 1024 });
    expect(reopened.orphans.length).toBe(300);
    await reopened.close();
  });
});
