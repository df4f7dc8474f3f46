/** The vault's prepared SQL statements (prepared once, reused), each change committed in one transaction. */
import type { Db } from './db.js';
import { BLOCK } from './block-map.js';
import type { FileRecord } from './cached-file.js';

interface FileRow {
  id: number;
  key: string;
  size: number;
  fetch_limit: number;
  remote_etag: string | null;
  mode: number;
  uid: number;
  gid: number;
  mtime_ms: number;
  dirty: number;
  pinned: number;
  local: number;
  data_dirty: number;
  last_error: number;
  xattrs: string | null;
}

/** Records remembered as written (VaultStatements.saved): a few KiB per hundred files. */
const SAVED_RECORDS = 4096;
/** Prefixes remembered as holding no record (VaultStatements.emptyUnder). */
const EMPTY_PREFIXES = 64;
/** Records (or their absence) kept by key (VaultStatements.known): about 0.5 KiB each. */
const KNOWN_RECORDS = 8192;

/** Every column of a record that an update writes, but the use time. */
function snapshot(rec: FileRecord): string {
  return JSON.stringify([rec.key, rec.size, rec.fetchLimit, rec.remoteEtag, rec.mode, rec.uid, rec.gid, rec.mtimeMs, rec.dirty, rec.pinned, rec.local, rec.dataDirty, rec.lastError, rec.xattrs ?? null]);
}

export interface BlockSum {
  idx: number;
  sum: string | null;
}

const toRecord = (r: FileRow): FileRecord => ({
  id: r.id,
  key: r.key,
  size: r.size,
  fetchLimit: r.fetch_limit,
  remoteEtag: r.remote_etag,
  mode: r.mode,
  uid: r.uid,
  gid: r.gid,
  mtimeMs: r.mtime_ms,
  dirty: r.dirty === 1,
  pinned: r.pinned === 1,
  local: r.local === 1,
  dataDirty: r.data_dirty === 1,
  lastError: r.last_error,
  xattrs: r.xattrs,
});

let lastAccess = 0;
/** Use times for least-recently-used eviction: strictly increasing, so two uses in one millisecond keep their order. */
export function accessClock(): number {
  lastAccess = Math.max(Date.now(), lastAccess + 1);
  return lastAccess;
}

/** SQLite could not grow a file: the disk (or its quota) is full. */
const isFull = (err: unknown): boolean => (err as { code?: string })?.code === 'SQLITE_FULL';

export class VaultStatements {
  private readonly s;
  /**
   * Called when a commit fails because the disk is full; true if it made room (the vault's reserve released), and
   * the commit is tried once more. Without it a close at that moment failed (EIO) and its file stayed held.
   */
  onFull?: () => boolean;

  constructor(private readonly db: Db) {
    this.s = {
      byKey: db.prepare('SELECT * FROM files WHERE key = ?'),
      byId: db.prepare('SELECT 1 FROM files WHERE id = ?'),
      insert: db.prepare(
        'INSERT INTO files (key, size, fetch_limit, remote_etag, mode, uid, gid, mtime_ms, dirty, pinned, local, data_dirty, last_error, xattrs, accessed_ms) VALUES (@key, @size, @fetchLimit, @remoteEtag, @mode, @uid, @gid, @mtimeMs, @dirty, @pinned, @local, @dataDirty, @lastError, @xattrs, @now)',
      ),
      update: db.prepare(
        'UPDATE files SET key = @key, size = @size, fetch_limit = @fetchLimit, remote_etag = @remoteEtag, mode = @mode, uid = @uid, gid = @gid, mtime_ms = @mtimeMs, dirty = @dirty, pinned = @pinned, local = @local, data_dirty = @dataDirty, last_error = @lastError, xattrs = @xattrs, accessed_ms = @now WHERE id = @id',
      ),
      delete: db.prepare('DELETE FROM files WHERE id = ?'),
      blocks: db.prepare('SELECT idx, state FROM blocks WHERE file_id = ?'),
      putBlock: db.prepare(
        'INSERT INTO blocks (file_id, idx, state, sum) VALUES (?, ?, ?, ?) ON CONFLICT (file_id, idx) DO UPDATE SET state = excluded.state, sum = coalesce(excluded.sum, blocks.sum)',
      ),
      dropBlock: db.prepare('DELETE FROM blocks WHERE file_id = ? AND idx = ?'),
      blocksBelow: db.prepare('SELECT count(*) AS n FROM blocks WHERE file_id = ? AND idx < ?'),
      sizeOf: db.prepare('SELECT size FROM files WHERE id = ?'),
      unsummed: db.prepare('SELECT 1 FROM blocks WHERE file_id = ? AND idx = ? AND state = 1 AND sum IS NULL'),
      setSum: db.prepare('UPDATE blocks SET sum = ? WHERE file_id = ? AND idx = ? AND state = 1 AND sum IS NULL'),
      presentBytes: db.prepare('SELECT coalesce(sum(max(0, min(@bs, f.size - b.idx * @bs))), 0) AS n FROM blocks b JOIN files f ON f.id = b.file_id'),
      presentBytesOf: db.prepare('SELECT coalesce(sum(max(0, min(@bs, f.size - b.idx * @bs))), 0) AS n FROM blocks b JOIN files f ON f.id = b.file_id WHERE f.id = @id'),
      closedCandidates: db.prepare(
        'SELECT f.id, f.key, sum(max(0, min(@bs, f.size - b.idx * @bs))) AS bytes FROM files f JOIN blocks b ON b.file_id = f.id WHERE f.pinned = 0 AND f.dirty = 0 GROUP BY f.id ORDER BY f.accessed_ms LIMIT 256',
      ),
      allBlocks: db.prepare('SELECT f.id, f.key, f.size, f.dirty, b.idx, b.state, b.sum FROM blocks b JOIN files f ON f.id = b.file_id ORDER BY f.id, b.idx'),
      allFiles: db.prepare('SELECT * FROM files ORDER BY key'),
      setPinned: db.prepare('UPDATE files SET pinned = ? WHERE id = ?'),
      blockCounts: db.prepare('SELECT file_id AS id, sum(state = 1) AS clean, sum(state = 2) AS dirty FROM blocks GROUP BY file_id'),
      tagsOf: db.prepare('SELECT tag_id AS id, value FROM tags WHERE file_id = ? ORDER BY tag_id'),
      getTag: db.prepare('SELECT value FROM tags WHERE file_id = ? AND tag_id = ?'),
      tagEverywhere: db.prepare('SELECT file_id AS fileId, value FROM tags WHERE tag_id = ?'),
      putTag: db.prepare('INSERT INTO tags (file_id, tag_id, value) VALUES (?, ?, ?) ON CONFLICT (file_id, tag_id) DO UPDATE SET value = excluded.value'),
      deleteTag: db.prepare('DELETE FROM tags WHERE file_id = ? AND tag_id = ?'),
      dropBlocksFrom: db.prepare('DELETE FROM blocks WHERE file_id = ? AND idx >= ?'),
      dropBlocks: db.prepare('DELETE FROM blocks WHERE file_id = ?'),
      dropClean: db.prepare('DELETE FROM blocks WHERE state = 1'),
      // A range on the key index, not a scan: every readdir asks this. (A key whose next character after the
      // prefix is U+10FFFF, a noncharacter, falls outside the range.)
      underPrefix: db.prepare("SELECT * FROM files WHERE key >= ? AND key < ? || char(1114111)"),
      pendingUnder: db.prepare("SELECT * FROM files WHERE key >= ? AND key < ? || char(1114111) AND (dirty = 1 OR remote_etag IS NULL)"),
      dirtyFiles: db.prepare('SELECT * FROM files WHERE dirty = 1'),
      getInfo: db.prepare('SELECT value FROM vault_info WHERE name = ?'),
      setInfo: db.prepare('INSERT INTO vault_info (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value'),
    };
  }

  /**
   * Each record as this process last wrote it (insert, update), so a commit with nothing new can skip its
   * transaction: a small file's close and upload committed the same record up to four times (profile of cp -r
   * of 1000 files). Bounded: a record not remembered is simply written again.
   */
  private readonly saved = new Map<number, string>();

  private remember(rec: FileRecord): void {
    this.saved.delete(rec.id);
    if (this.saved.size >= SAVED_RECORDS) this.saved.delete(this.saved.keys().next().value!);
    this.saved.set(rec.id, snapshot(rec));
  }

  /** Whether the stored row of this record is exactly this record (as this process last wrote it). */
  isSaved(rec: FileRecord): boolean {
    return this.saved.get(rec.id) === snapshot(rec);
  }

  /**
   * Records by key as last read or written, or null for a key without one. A small file's `cp` looked its record
   * up four times and its upload three (every FUSE request on a name asks whether the vault has it), each a
   * SELECT with its WAL read lock: a tenth of the main thread's time. Filled only outside transactions, and every
   * write forgets what it touches first, so a rolled-back transaction never leaves here a row SQLite lacks. Every
   * write to `files` goes through this class, on the one connection of the one process holding the vault's lock.
   */
  private readonly known = new Map<string, FileRecord | null>();
  /**
   * Prefixes under which a query found no record, and none was added or renamed there since: find() answers their
   * keys without a query (a cold `ls -l` of a directory the vault holds nothing of looks every name up).
   */
  private readonly emptyUnder = new Set<string>();
  /** The key each known record was kept under, to forget it by id (a rename changes the key). */
  private readonly knownKeys = new Map<number, string>();

  /** Journal writes waiting for the end of this turn of the event loop (see batched). */
  private batch: { job: () => void; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private batchTimer: NodeJS.Immediate | undefined;

  /**
   * Run `job` (journal writes) in one transaction with the other jobs asked for in this turn of the event loop;
   * resolves once that transaction has committed. Each commit of its own cost a small file's upload about 0.1 ms of
   * the main thread twice (its attempt, its end), most of the SQLite time of a flush of many files. Each job runs
   * in a savepoint of its own: one that throws (its record deleted meanwhile) is undone and rejected alone.
   */
  batched(job: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.batch.push({ job, resolve, reject });
      this.batchTimer ??= setImmediate(() => this.runBatch());
    });
  }

  /** Commit the jobs waiting for the end of this turn now (the vault closes). */
  runBatch(): void {
    if (this.batchTimer) clearImmediate(this.batchTimer);
    this.batchTimer = undefined;
    const jobs = this.batch;
    this.batch = [];
    if (!jobs.length) return;
    const failed = new Map<number, unknown>();
    const commit = (): void => {
      failed.clear();
      this.db.transaction(() => {
        jobs.forEach((j, i) => {
          try {
            this.db.transaction(j.job)();
          } catch (err) {
            failed.set(i, err);
          }
        });
      })();
    };
    try {
      this.withRoom(commit);
    } catch (err) {
      // The commit itself failed (disk full, I/O error, the database closed): nothing of the batch is written.
      this.saved.clear();
      for (const j of jobs) j.reject(err);
      return;
    }
    jobs.forEach((j, i) => (failed.has(i) ? j.reject(failed.get(i)) : j.resolve()));
  }

  private keep(key: string, rec: FileRecord | null): void {
    if (this.db.inTransaction) return;
    this.forget(key);
    if (this.known.size >= KNOWN_RECORDS) this.forget(this.known.keys().next().value!);
    this.known.set(key, rec && { ...rec });
    if (rec) this.knownKeys.set(rec.id, key);
  }

  private forget(key: string): void {
    const rec = this.known.get(key);
    this.known.delete(key);
    if (rec && this.knownKeys.get(rec.id) === key) this.knownKeys.delete(rec.id);
  }

  private forgetId(id: number): void {
    const key = this.knownKeys.get(id);
    if (key !== undefined) this.forget(key);
  }

  private params(rec: FileRecord) {
    return { ...rec, dirty: rec.dirty ? 1 : 0, pinned: rec.pinned ? 1 : 0, local: rec.local ? 1 : 0, dataDirty: rec.dataDirty ? 1 : 0, xattrs: rec.xattrs ?? null, now: accessClock() };
  }

  /** The record of a key (a copy: callers change it and save it). */
  find(key: string): FileRecord | undefined {
    const known = this.known.get(key);
    if (known !== undefined) return known ? { ...known } : undefined;
    for (const p of this.emptyUnder) if (key.startsWith(p)) return undefined;
    const row = this.s.byKey.get(key) as FileRow | undefined;
    const rec = row && toRecord(row);
    this.keep(key, rec ?? null);
    return rec;
  }

  /** A record is written under `key` (new, or renamed there): prefixes of it are no longer known empty. */
  private occupied(key: string): void {
    for (const p of this.emptyUnder) if (key.startsWith(p)) this.emptyUnder.delete(p);
  }

  insert(rec: Omit<FileRecord, 'id'>): FileRecord {
    this.occupied(rec.key);
    this.forget(rec.key);
    const info = this.s.insert.run(this.params({ ...rec, id: 0 }));
    const inserted = { ...rec, id: Number(info.lastInsertRowid) };
    this.remember(inserted);
    this.keep(inserted.key, inserted);
    return inserted;
  }

  saveFile(rec: FileRecord): void {
    this.occupied(rec.key);
    this.forgetId(rec.id);
    this.forget(rec.key);
    this.s.update.run(this.params(rec));
    this.remember(rec);
    this.keep(rec.key, rec);
  }

  /** Whether a record with this id exists. */
  isKnown(id: number): boolean {
    return this.s.byId.get(id) !== undefined;
  }

  deleteFile(id: number): void {
    this.forgetId(id);
    this.s.delete.run(id);
    this.saved.delete(id);
  }

  loadStates(id: number, blockCount: number): Uint8Array {
    const states = new Uint8Array(blockCount);
    if (blockCount === 0) return states; // an empty file (one just created): no block can count
    for (const row of this.s.blocks.iterate(id) as Iterable<{ idx: number; state: number }>) {
      if (row.idx < blockCount) states[row.idx] = row.state;
    }
    return states;
  }

  putBlocks(fileId: number, blocks: BlockSum[], state: number): void {
    if (blocks.length === 0) return;
    this.db.transaction(() => {
      for (const b of blocks) this.s.putBlock.run(fileId, b.idx, state, b.sum);
    })();
  }

  dropBlock(fileId: number, idx: number): void {
    this.s.dropBlock.run(fileId, idx);
  }

  /** A file's size by id, or undefined if the record is gone. */
  sizeOf(fileId: number): number | undefined {
    return (this.s.sizeOf.get(fileId) as { size: number } | undefined)?.size;
  }

  /** Whether a block is clean and still without its checksum (see PendingSums). */
  isUnsummed(fileId: number, idx: number): boolean {
    return this.s.unsummed.get(fileId, idx) !== undefined;
  }

  /** How many of a file's blocks below `end` are present. */
  blocksBelow(fileId: number, end: number): number {
    return (this.s.blocksBelow.get(fileId, end) as { n: number }).n;
  }

  /** Checksums of clean blocks fetched without one; a block changed or dropped meanwhile keeps what it has. */
  setSums(fileId: number, sums: BlockSum[]): void {
    this.db.transaction(() => {
      for (const b of sums) this.s.setSum.run(b.sum, fileId, b.idx);
    })();
  }

  /** Bytes the present blocks of all files (or of one) hold within their files' sizes. */
  presentBytes(blockSize: number, id?: number): number {
    const row = id === undefined ? this.s.presentBytes.get({ bs: blockSize }) : this.s.presentBytesOf.get({ bs: blockSize, id });
    return (row as { n: number }).n;
  }

  /** Closed-file eviction candidates: unpinned files without changes, least recently used first. */
  closedCandidates(blockSize: number): { id: number; key: string; bytes: number }[] {
    return this.s.closedCandidates.all({ bs: blockSize }) as { id: number; key: string; bytes: number }[];
  }

  allBlocks(): Iterable<{ id: number; key: string; size: number; dirty: number; idx: number; state: number; sum: string | null }> {
    return this.s.allBlocks.iterate() as Iterable<{ id: number; key: string; size: number; dirty: number; idx: number; state: number; sum: string | null }>;
  }

  allFiles(): FileRecord[] {
    return (this.s.allFiles.all() as FileRow[]).map(toRecord);
  }

  blockCounts(): Map<number, { clean: number; dirty: number }> {
    const out = new Map<number, { clean: number; dirty: number }>();
    for (const r of this.s.blockCounts.iterate() as Iterable<{ id: number; clean: number; dirty: number }>) out.set(r.id, { clean: r.clean, dirty: r.dirty });
    return out;
  }


  tagsOf(fileId: number): { id: number; value: Buffer }[] {
    return this.s.tagsOf.all(fileId) as { id: number; value: Buffer }[];
  }

  getTag(fileId: number, tagId: number): Buffer | undefined {
    return (this.s.getTag.get(fileId, tagId) as { value: Buffer } | undefined)?.value;
  }

  /** One tag of every file that has it. */
  tagEverywhere(tagId: number): { fileId: number; value: Buffer }[] {
    return this.s.tagEverywhere.all(tagId) as { fileId: number; value: Buffer }[];
  }

  putTag(fileId: number, tagId: number, value: Buffer): void {
    this.s.putTag.run(fileId, tagId, value);
  }

  deleteTag(fileId: number, tagId: number): boolean {
    return this.s.deleteTag.run(fileId, tagId).changes > 0;
  }

  /** Use times of several files, in one transaction. */
  touch(times: Map<number, number>): void {
    const stmt = this.db.prepare('UPDATE files SET accessed_ms = ? WHERE id = ?');
    this.db.transaction(() => {
      for (const [id, ms] of times) stmt.run(ms, id);
    })();
  }

  setPinned(id: number, pinned: boolean): void {
    this.forgetId(id);
    this.s.setPinned.run(pinned ? 1 : 0, id);
    this.saved.delete(id);
  }

  /**
   * The journal commit of one file: record, dirty and clean blocks, the rows from `dropFrom` on dropped first (past
   * the end, or cut by a truncate since the last commit), and `also` (the tags an upload leaves), in one
   * transaction. `durable`: on disk when it returns (fsync), not only safe from a crash of the process.
   */
  commitFile(rec: FileRecord, dropFrom: number, dirty: BlockSum[], clean: BlockSum[], durable = true, also?: () => void): void {
    this.occupied(rec.key);
    this.forgetId(rec.id);
    this.forget(rec.key);
    if (durable) this.db.pragma('synchronous = FULL');
    try {
      this.withRoom(() =>
        this.db.transaction(() => {
          this.s.update.run(this.params(rec));
          this.s.dropBlocksFrom.run(rec.id, dropFrom);
          for (const b of dirty) this.s.putBlock.run(rec.id, b.idx, BLOCK.DIRTY, b.sum);
          for (const b of clean) this.s.putBlock.run(rec.id, b.idx, BLOCK.CLEAN, b.sum);
          also?.();
        })(),
      );
      this.remember(rec);
      this.keep(rec.key, rec);
    } finally {
      if (durable) this.db.pragma('synchronous = NORMAL');
    }
  }

  /** Run a transaction; if the disk is full and room can be made, once more. */
  private withRoom<T>(tx: () => T): T {
    try {
      return tx();
    } catch (err) {
      if (isFull(err) && !this.db.inTransaction && this.onFull?.()) return tx();
      throw err;
    }
  }

  dropAllBlocks(id: number): void {
    this.s.dropBlocks.run(id);
  }

  /** After an unclean stop, clean blocks may refer to bytes that never reached the disk: forget them (they refetch). */
  dropCleanBlocks(): number {
    return this.s.dropClean.run().changes;
  }

  underPrefix(prefix: string): FileRecord[] {
    const rows = this.s.underPrefix.all(prefix, prefix) as FileRow[];
    if (!rows.length && !this.db.inTransaction) {
      if (this.emptyUnder.size >= EMPTY_PREFIXES) this.emptyUnder.delete(this.emptyUnder.values().next().value!);
      this.emptyUnder.add(prefix);
    }
    return rows.map(toRecord);
  }

  /** Files under a prefix with changes storage lacks, or no object at all (new, local). */
  pendingUnder(prefix: string): FileRecord[] {
    return (this.s.pendingUnder.all(prefix, prefix) as FileRow[]).map(toRecord);
  }

  dirtyFiles(): FileRecord[] {
    return (this.s.dirtyFiles.all() as FileRow[]).map(toRecord);
  }

  getInfo(name: string): string | undefined {
    return (this.s.getInfo.get(name) as { value: string } | undefined)?.value;
  }

  setInfo(name: string, value: string): void {
    this.s.setInfo.run(name, value);
  }
}
