/** The vault's prepared SQL statements (prepared once, reused), each change committed in one transaction. */
import type { Db } from './db.js';
import { BLOCK, type FileRecord } from './cached-file.js';

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
  last_error: number;
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
  lastError: r.last_error,
});

export class VaultStatements {
  private readonly s;

  constructor(private readonly db: Db) {
    this.s = {
      byKey: db.prepare('SELECT * FROM files WHERE key = ?'),
      insert: db.prepare(
        'INSERT INTO files (key, size, fetch_limit, remote_etag, mode, uid, gid, mtime_ms, dirty, last_error, accessed_ms) VALUES (@key, @size, @fetchLimit, @remoteEtag, @mode, @uid, @gid, @mtimeMs, @dirty, @lastError, @now)',
      ),
      update: db.prepare(
        'UPDATE files SET key = @key, size = @size, fetch_limit = @fetchLimit, remote_etag = @remoteEtag, mode = @mode, uid = @uid, gid = @gid, mtime_ms = @mtimeMs, dirty = @dirty, last_error = @lastError, accessed_ms = @now WHERE id = @id',
      ),
      delete: db.prepare('DELETE FROM files WHERE id = ?'),
      blocks: db.prepare('SELECT idx, state FROM blocks WHERE file_id = ?'),
      putBlock: db.prepare('INSERT INTO blocks (file_id, idx, state) VALUES (?, ?, ?) ON CONFLICT (file_id, idx) DO UPDATE SET state = excluded.state'),
      dropBlocksFrom: db.prepare('DELETE FROM blocks WHERE file_id = ? AND idx >= ?'),
      dropBlocks: db.prepare('DELETE FROM blocks WHERE file_id = ?'),
      dropClean: db.prepare('DELETE FROM blocks WHERE state = 1'),
      underPrefix: db.prepare('SELECT * FROM files WHERE substr(key, 1, ?) = ?'),
      dirtyFiles: db.prepare('SELECT * FROM files WHERE dirty = 1'),
      getInfo: db.prepare('SELECT value FROM vault_info WHERE name = ?'),
      setInfo: db.prepare('INSERT INTO vault_info (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value'),
    };
  }

  private params(rec: FileRecord) {
    return { ...rec, dirty: rec.dirty ? 1 : 0, now: Date.now() };
  }

  find(key: string): FileRecord | undefined {
    const row = this.s.byKey.get(key) as FileRow | undefined;
    return row && toRecord(row);
  }

  insert(rec: Omit<FileRecord, 'id'>): FileRecord {
    const info = this.s.insert.run(this.params({ ...rec, id: 0 }));
    return { ...rec, id: Number(info.lastInsertRowid) };
  }

  saveFile(rec: FileRecord): void {
    this.s.update.run(this.params(rec));
  }

  deleteFile(id: number): void {
    this.s.delete.run(id);
  }

  loadStates(id: number, blockCount: number): Uint8Array {
    const states = new Uint8Array(blockCount);
    for (const row of this.s.blocks.iterate(id) as Iterable<{ idx: number; state: number }>) {
      if (row.idx < blockCount) states[row.idx] = row.state;
    }
    return states;
  }

  putBlocks = (fileId: number, blocks: number[], state: number): void => {
    if (blocks.length === 0) return;
    this.db.transaction(() => {
      for (const b of blocks) this.s.putBlock.run(fileId, b, state);
    })();
  };

  /** The journal commit of one file: record, dirty and clean blocks, and blocks past the end, atomically. */
  commitFile(rec: FileRecord, blockCount: number, dirty: number[], clean: number[]): void {
    this.db.transaction(() => {
      this.s.update.run(this.params(rec));
      this.s.dropBlocksFrom.run(rec.id, blockCount);
      for (const b of dirty) this.s.putBlock.run(rec.id, b, BLOCK.DIRTY);
      for (const b of clean) this.s.putBlock.run(rec.id, b, BLOCK.CLEAN);
    })();
  }

  dropAllBlocks(id: number): void {
    this.s.dropBlocks.run(id);
  }

  /** After an unclean stop, clean blocks may refer to bytes that never reached the disk: forget them (they refetch). */
  dropCleanBlocks(): number {
    return this.s.dropClean.run().changes;
  }

  underPrefix(prefix: string): FileRecord[] {
    return (this.s.underPrefix.all(prefix.length, prefix) as FileRow[]).map(toRecord);
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
