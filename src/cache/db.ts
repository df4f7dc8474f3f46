/**
 * The vault's SQLite database: opened in WAL mode, schema brought up to date by the numbered SQL files in
 * `migrations/` (each applied once, in order, recorded in `schema_migrations`). A vault whose schema is newer
 * than this program, or that is not a SQLite database, is refused with a VaultError and left untouched.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { VaultError } from './errors.js';

export type Db = Database.Database;

const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[\w-]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 4)), name: f.slice(5, -4), sql: readFileSync(dir + f, 'utf8') }));
}

export function openDatabase(file: string, migrations = loadMigrations()): Db {
  let db: Db | undefined;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: a commit is atomic and survives a crash of the process as soon as it returns (it is in
    // the OS's hands); it reaches the disk at the next checkpoint. Commits that must survive a crash of the machine
    // (fsync) switch to FULL for their transaction (VaultStatements.commitFile). better-sqlite3 runs on the main
    // thread: a synchronous fsync per small commit stalled every FUSE request (most of tar x's time in a profile).
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new VaultError('CORRUPT', `vault database ${file} is corrupt: ${String(check)}`);
    migrate(db, file, migrations);
    return db;
  } catch (err) {
    db?.close();
    if (err instanceof VaultError) throw err;
    const e = err as { code?: string; message?: string };
    if (e.code === 'SQLITE_NOTADB' || e.code === 'SQLITE_CORRUPT') {
      throw new VaultError('CORRUPT', `vault database ${file} is corrupt or not a vault (${e.message})`, { cause: err });
    }
    throw new VaultError('IO', `cannot open vault database ${file}: ${e.message}`, { cause: err });
  }
}

function migrate(db: Db, file: string, migrations: Migration[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)');
  const current = (db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0;
  const latest = migrations.at(-1)?.version ?? 0;
  if (current > latest) {
    throw new VaultError('NEWER_SCHEMA', `vault ${file} has schema version ${current}, newer than this s3vault understands (${latest}); upgrade s3vault or use another --vault`);
  }
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)');
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.version, m.name, Date.now());
    })();
  }
}
