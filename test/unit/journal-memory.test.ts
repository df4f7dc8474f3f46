/**
 * What the vault's statements keep in memory instead of asking SQLite again (records by key, listing times and
 * entries) must always say what SQLite says — after renames, deletes, rolled-back transactions — and writes
 * batched into one transaction per turn must commit, or fail, job by job.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FileRecord } from '../../src/cache/cached-file.js';
import { openDatabase, type Db } from '../../src/cache/db.js';
import { ListingStore } from '../../src/cache/listings.js';
import { VaultStatements } from '../../src/cache/statements.js';

let dir: string;
let file: string;
let db: Db;
let st: VaultStatements;

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-journal-'));
  file = path.join(dir, 'vault.db');
  db = openDatabase(file);
  st = new VaultStatements(db);
});
afterEach(() => {
  if (db.open) db.close();
  rmSync(dir, { recursive: true, force: true });
});

const record = (key: string): Omit<FileRecord, 'id'> => ({
  key,
  size: 10,
  fetchLimit: 10,
  remoteEtag: null,
  mode: 0o100644,
  uid: 0,
  gid: 0,
  mtimeMs: 1000,
  dirty: true,
  pinned: false,
  local: false,
  dataDirty: true,
  lastError: 0,
  xattrs: null,
});
/** The row as another connection reads it: what is committed. */
const committed = (key: string) => {
  const other = new Database(file, { readonly: true });
  try {
    return other.prepare('SELECT key, size, pinned FROM files WHERE key = ?').get(key) as { key: string; size: number; pinned: number } | undefined;
  } finally {
    other.close();
  }
};

describe('records kept by key', () => {
  it('follow inserts, renames, saves, pins and deletes', () => {
    expect(st.find('a')).toBeUndefined(); // remembered as absent
    const a = st.insert(record('a'));
    expect(st.find('a')).toMatchObject({ id: a.id, key: 'a', size: 10 });
    st.saveFile({ ...a, key: 'b', size: 20 }); // a rename
    expect(st.find('a')).toBeUndefined();
    expect(st.find('b')).toMatchObject({ id: a.id, size: 20 });
    st.setPinned(a.id, true);
    expect(st.find('b')?.pinned).toBe(true);
    st.commitFile({ ...st.find('b')!, size: 30 }, 1, [], [], false);
    expect(st.find('b')?.size).toBe(30);
    st.deleteFile(a.id);
    expect(st.find('b')).toBeUndefined();
  });

  it('hand out copies: changing one changes nothing kept', () => {
    st.insert(record('a'));
    const r = st.find('a')!;
    r.size = 999;
    expect(st.find('a')!.size).toBe(10);
  });

  it('never keep what a rolled-back transaction wrote', () => {
    const a = st.insert(record('a'));
    expect(st.find('a')!.size).toBe(10);
    expect(() =>
      db.transaction(() => {
        st.saveFile({ ...a, size: 50 });
        expect(st.find('a')!.size).toBe(50); // the transaction sees its own write...
        throw new Error('undo');
      })(),
    ).toThrow('undo');
    expect(st.find('a')!.size).toBe(10); // ...and after the rollback, what SQLite has
    expect(committed('a')?.size).toBe(10);
    // Nor a name inserted by one.
    expect(st.find('c')).toBeUndefined();
    expect(() =>
      db.transaction(() => {
        st.insert(record('c'));
        throw new Error('undo');
      })(),
    ).toThrow('undo');
    expect(st.find('c')).toBeUndefined();
  });
});

describe('listings kept in memory', () => {
  it('times and names follow puts, entries, drops and clears', async () => {
    const ls = new ListingStore(db);
    expect(ls.lookup('d/', 'f', 60_000)).toBeUndefined(); // never listed
    ls.put('d/', [{ name: 'f', kind: 'file', size: 1, etag: 'e1', modifiedMs: 1 }]);
    expect(ls.lookup('d/', 'f', 60_000)).toMatchObject({ size: 1 });
    expect(ls.lookup('d/', 'g', 60_000)).toBe('absent');
    ls.setEntry('d/', 'g', { kind: 'file', size: 2, etag: 'e2', modifiedMs: 2 });
    expect(ls.lookup('d/', 'g', 60_000)).toMatchObject({ size: 2 });
    await new Promise((r) => setImmediate(r)); // the entry's batch is written
    expect(ls.lookup('d/', 'g', 60_000)).toMatchObject({ size: 2 });
    ls.setEntry('d/', 'f', null);
    ls.flush();
    expect(ls.lookup('d/', 'f', 60_000)).toBe('absent');
    ls.put('d/', [{ name: 'f', kind: 'file', size: 3, etag: 'e3', modifiedMs: 3 }]);
    expect(ls.lookup('d/', 'f', 60_000)).toMatchObject({ size: 3 });
    expect(ls.lookup('d/', 'g', 60_000)).toBe('absent');
    ls.put('d/e/', []);
    ls.dropUnder('d/');
    expect(ls.lookup('d/', 'f', 60_000)).toBeUndefined();
    expect(ls.lookup('d/e/', 'x', 60_000)).toBeUndefined();
    ls.put('x/', []);
    expect(ls.lookup('x/', 'y', 60_000)).toBe('absent');
    ls.drop('x/');
    expect(ls.lookup('x/', 'y', 60_000)).toBeUndefined();
    ls.put('x/', []);
    ls.clear();
    expect(ls.lookup('x/', 'y', 60_000)).toBeUndefined();
  });

  it('age: a listing kept in memory still goes stale', async () => {
    const ls = new ListingStore(db);
    ls.put('d/', []);
    expect(ls.lookup('d/', 'f', 60_000)).toBe('absent');
    await new Promise((r) => setTimeout(r, 30));
    expect(ls.lookup('d/', 'f', 10)).toBeUndefined();
  });
});

describe('writes batched per turn of the event loop', () => {
  it('commit together, and resolve once committed', async () => {
    const a = st.insert(record('a'));
    const b = st.insert(record('b'));
    let inOne = true;
    const jobs = [a, b].map((r) =>
      st.batched(() => {
        inOne &&= db.inTransaction;
        st.saveFile({ ...r, size: 77 });
      }),
    );
    expect(committed('a')?.size).toBe(10); // not before the end of the turn
    await Promise.all(jobs);
    expect(inOne).toBe(true);
    expect(committed('a')?.size).toBe(77);
    expect(committed('b')?.size).toBe(77);
  });

  it('a job that throws is undone and rejected alone', async () => {
    const a = st.insert(record('a'));
    const bad = st.batched(() => {
      st.saveFile({ ...a, size: 1 });
      st.putTag(12345, 1, Buffer.from('x')); // no such file: a foreign-key failure
    });
    const good = st.batched(() => st.saveFile({ ...a, key: 'a2' }));
    await expect(bad).rejects.toThrow();
    await expect(good).resolves.toBeUndefined();
    expect(committed('a')).toBeUndefined();
    expect(committed('a2')?.size).toBe(10); // the bad job's size change was undone
    expect(st.find('a2')?.size).toBe(10);
  });

  it('runBatch commits at once; a batch after the database closed rejects', async () => {
    const a = st.insert(record('a'));
    const p = st.batched(() => st.setPinned(a.id, true));
    st.runBatch();
    expect(committed('a')?.pinned).toBe(1);
    await p;
    const late = st.batched(() => st.setPinned(a.id, false));
    db.close();
    await expect(late).rejects.toThrow();
  });
});
