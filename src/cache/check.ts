/**
 * CheckAndRepair (R55) and compaction, on a vault no process has open.
 * Check: SQLite's integrity check, then every block's bytes against its checksum. A damaged clean block is
 * dropped (it is refetched from storage on the next read); a damaged dirty block cannot be refetched, so it is
 * reported by key and offset and kept. Data files no record owns are removed.
 * An irreparable database with CACHE_CHECK.RECREATE_VAULT: the data files are moved aside to
 * `salvage-<time>/` (whatever dirty data they hold is saved there) and an empty vault is created.
 * Compact: VACUUM, and give back the space of bytes no block row vouches for (holes punched).
 */
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, readSync, renameSync, rmSync, ftruncateSync, fstatSync } from 'node:fs';
import path from 'node:path';
import { blockSum, initChecksums } from './checksum.js';
import { BLOCK } from './block-map.js';
import { CACHE_CHECK } from './constants.js';
import { openDatabase, type Db } from './db.js';
import { VaultError } from './errors.js';
import { takeLock } from './lock.js';
import { punchHole } from './punch-hole.js';
import { VaultStatements } from './statements.js';

export interface CheckReport {
  blocksChecked: number;
  /** Damaged clean blocks, dropped (they refetch). */
  droppedClean: { key: string; offset: number }[];
  /** Damaged dirty blocks: changed data that no longer matches what was written. */
  damagedDirty: { key: string; offset: number }[];
  strayDataFiles: number;
  /** Set when the vault was recreated; where the old data files went. */
  recreated?: { salvageDir: string; reason: string };
}

function readRange(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, offset + done);
    if (n === 0) break; // past the end: zeros, as the vault reads it
    done += n;
  }
  return buf;
}

function withVault<T>(dir: string, fn: (db: Db, st: VaultStatements) => T): T {
  if (!existsSync(path.join(dir, 'vault.db'))) throw new VaultError('NOT_FOUND', `${dir} is not a vault (no vault.db)`);
  const lock = takeLock(dir);
  try {
    const db = openDatabase(path.join(dir, 'vault.db'));
    try {
      const integrity = db.pragma('integrity_check', { simple: true });
      if (integrity !== 'ok') throw new VaultError('CORRUPT', `vault database ${path.join(dir, 'vault.db')} is corrupt: ${String(integrity)}`);
      return fn(db, new VaultStatements(db));
    } finally {
      db.close();
    }
  } finally {
    rmSync(lock, { force: true });
  }
}

export async function checkAndRepair(dir: string, flags: number = CACHE_CHECK.NO_RECREATE): Promise<CheckReport> {
  await initChecksums();
  try {
    return withVault(dir, (_db, st) => check(dir, st));
  } catch (err) {
    if (!(err instanceof VaultError) || err.code !== 'CORRUPT') throw err;
    if (!(flags & CACHE_CHECK.RECREATE_VAULT)) throw new VaultError('CORRUPT', `${err.message}; run "s3vault fsck --recreate" to save its data files aside and start an empty vault`);
    return recreate(dir, err.message);
  }
}

function check(dir: string, st: VaultStatements): CheckReport {
  const report: CheckReport = { blocksChecked: 0, droppedClean: [], damagedDirty: [], strayDataFiles: 0 };
  const blockSize = Number(st.getInfo('block_size') ?? 1048576);
  const fds = new Map<number, number | null>();
  const fdOf = (id: number): number | null => {
    if (!fds.has(id)) {
      const file = path.join(dir, 'data', String(id));
      fds.set(id, existsSync(file) ? openSync(file, 'r') : null);
    }
    return fds.get(id)!;
  };
  try {
    for (const b of [...st.allBlocks()]) {
      report.blocksChecked++;
      const offset = b.idx * blockSize;
      const fd = fdOf(b.id);
      const length = Math.min(blockSize, b.size - offset);
      const ok = fd !== null && length > 0 && (b.sum === null || blockSum(readRange(fd, offset, length)) === b.sum);
      if (ok) continue;
      if (b.state === BLOCK.CLEAN) {
        st.dropBlock(b.id, b.idx);
        report.droppedClean.push({ key: b.key, offset });
      } else report.damagedDirty.push({ key: b.key, offset });
    }
  } finally {
    for (const fd of fds.values()) if (fd !== null) closeSync(fd);
  }
  const known = new Set(st.allFiles().map((r) => String(r.id)));
  for (const name of readdirSync(path.join(dir, 'data'))) {
    if (!known.has(name)) {
      rmSync(path.join(dir, 'data', name), { force: true });
      report.strayDataFiles++;
    }
  }
  return report;
}

function recreate(dir: string, reason: string): CheckReport {
  const lock = takeLock(dir);
  try {
    const salvageDir = path.join(dir, `salvage-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    mkdirSync(salvageDir);
    for (const name of ['data', 'vault.db', 'vault.db-wal', 'vault.db-shm']) {
      if (existsSync(path.join(dir, name))) renameSync(path.join(dir, name), path.join(salvageDir, name));
    }
    mkdirSync(path.join(dir, 'data'));
    openDatabase(path.join(dir, 'vault.db')).close();
    return { blocksChecked: 0, droppedClean: [], damagedDirty: [], strayDataFiles: 0, recreated: { salvageDir, reason } };
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Reclaim space: VACUUM the database, punch out bytes no block row vouches for, cut data files to size. */
export function compactVault(dir: string): { bytesBefore: number; bytesAfter: number } {
  return withVault(dir, (db, st) => {
    const blockSize = Number(st.getInfo('block_size') ?? 1048576);
    const allocated = (): number =>
      readdirSync(path.join(dir, 'data')).reduce((sum, name) => sum + fstatBlocks(path.join(dir, 'data', name)), 0);
    const bytesBefore = allocated();
    const present = new Map<number, Set<number>>();
    for (const b of st.allBlocks()) {
      if (!present.has(b.id)) present.set(b.id, new Set());
      present.get(b.id)!.add(b.idx);
    }
    for (const rec of st.allFiles()) {
      const file = path.join(dir, 'data', String(rec.id));
      if (!existsSync(file)) continue;
      const fd = openSync(file, 'r+');
      try {
        if (fstatSync(fd).size > rec.size) ftruncateSync(fd, rec.size);
        const have = present.get(rec.id) ?? new Set();
        for (let b = 0; b * blockSize < rec.size; b++) if (!have.has(b)) punchHole(fd, b * blockSize, Math.min(blockSize, rec.size - b * blockSize));
      } finally {
        closeSync(fd);
      }
    }
    db.exec('VACUUM');
    return { bytesBefore, bytesAfter: allocated() };
  });
}

function fstatBlocks(file: string): number {
  const fd = openSync(file, 'r');
  try {
    return fstatSync(fd).blocks * 512;
  } finally {
    closeSync(fd);
  }
}
