/** Per-file status (FILE_STATUS_*) and the ENUM_MODE filter of EnumerateCachedFiles (R54). */
import type { CachedFile, FileRecord } from './cached-file.js';
import { ENUM_MODE, FILE_STATUS, type FileStatusKind } from './constants.js';
import type { VaultStatements } from './statements.js';

export interface FileStatus {
  key: string;
  size: number;
  cachedBytes: number;
  dirtyBytes: number;
  pinned: boolean;
  local: boolean;
  status: FileStatusKind;
  lastError: number;
}

/** Open files report their live state; closed ones their stored record and block counts. */
export function fileStatuses(open: Iterable<CachedFile>, statements: VaultStatements, blockSize: number, prefix: string): FileStatus[] {
  const out: FileStatus[] = [];
  const seen = new Set<string>();
  const add = (rec: FileRecord, clean: number, dirty: number, isOpen: boolean): void => {
    if (!rec.key.startsWith(prefix) || seen.has(rec.key)) return;
    seen.add(rec.key);
    let status: FileStatusKind = rec.local ? FILE_STATUS.LOCAL : rec.dirty ? FILE_STATUS.ORPHAN : FILE_STATUS.UNCHANGED;
    if (isOpen) status = rec.dirty ? FILE_STATUS.CHANGED : FILE_STATUS.OPEN;
    out.push({
      key: rec.key,
      size: rec.size,
      cachedBytes: Math.min(rec.size, (clean + dirty) * blockSize),
      dirtyBytes: Math.min(rec.size, dirty * blockSize),
      pinned: rec.pinned,
      local: rec.local,
      status,
      lastError: rec.lastError,
    });
  };
  for (const f of open) if (!f.unlinked) add(f.rec, f.cachedBlocks() - f.dirtyBlocks(), f.dirtyBlocks(), true);
  const counts = statements.blockCounts();
  for (const rec of statements.allFiles()) {
    const c = counts.get(rec.id) ?? { clean: 0, dirty: 0 };
    add(rec, c.clean, c.dirty, false);
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : 1));
}

/** ENUM_MODE.ALL matches everything; the other modes are flags, and a file matching any of them is in. */
export function matchesEnumMode(s: FileStatus, mode: number): boolean {
  if (mode === ENUM_MODE.ALL) return true;
  const changed = s.status === FILE_STATUS.CHANGED || s.status === FILE_STATUS.ORPHAN;
  return Boolean(
    (mode & ENUM_MODE.CHANGED && changed) ||
      (mode & ENUM_MODE.UNCHANGED && !changed && !s.local) ||
      (mode & ENUM_MODE.LOCAL && s.local) ||
      (mode & ENUM_MODE.ORPHAN && s.status === FILE_STATUS.ORPHAN) ||
      (mode & ENUM_MODE.PINNED && s.pinned),
  );
}
