/**
 * What the `s3vault pin | unpin | status | flush` commands ask of a running mount, on paths of the mount:
 * pin fetches whole files or trees into the vault (PREFETCH_ALL) and keeps them from eviction, so they read
 * offline; unpin releases them; status reports each cached file; flush uploads pending changes.
 */
import type { Vault, FileStatus, Conflict } from '../../cache/vault.js';
import type { QueueEntry } from '../../cache/writeback.js';
import type { PoweredStorage } from '../../storage/power.js';
import { FILE_STATUS, FLUSH_MODE } from '../../cache/constants.js';
import type { ObjectInfo } from '../../storage/driver.js';
import { E, FsError } from '../errors.js';
import { dirPrefix, pathToKey } from './keys.js';
import { decodeMeta, type Owner } from './meta.js';

export interface Progress {
  doneBytes: number;
  totalBytes: number;
  files: number;
  totalFiles: number;
  current: string;
}

/** What a flush sent: changed files, directory markers, deletes. */
export interface FlushCounts {
  files: number;
  dirs: number;
  deletes: number;
}

export class Maintenance {
  constructor(
    private readonly vault: Vault,
    private readonly owner: Owner,
  ) {}

  /** The objects a path names: the file itself, or every file under the directory. */
  private async objectsAt(path: string): Promise<ObjectInfo[]> {
    const key = pathToKey(path);
    if (key !== '') {
      const head = await this.vault.storage.head(key);
      if (head) return [head];
    }
    const under = await this.vault.storage.list(dirPrefix(path));
    const files = under.objects.filter((o) => !o.key.endsWith('/'));
    if (files.length === 0 && key !== '' && !under.objects.length) throw new FsError(E.ENOENT, 'pin', path);
    return files;
  }

  async pin(path: string, onProgress: (p: Progress) => void): Promise<{ files: number; bytes: number }> {
    const objects = await this.objectsAt(path);
    const progress: Progress = { doneBytes: 0, totalBytes: objects.reduce((n, o) => n + o.size, 0), files: 0, totalFiles: objects.length, current: '' };
    for (const o of objects) {
      progress.current = o.key;
      const info = decodeMeta('file', o.size, o.lastModified, o.meta, this.owner);
      const rec = this.vault.record(o.key);
      const base = rec && (rec.dirty || rec.remoteEtag === null) ? (rec.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null) : { etag: o.etag, size: o.size };
      const file = await this.vault.openFile(o.key, base, rec ?? info);
      try {
        this.vault.setPinned(o.key, true);
        await file.fetchAll((bytes) => {
          progress.doneBytes += bytes;
          onProgress(progress);
        });
      } finally {
        await this.vault.closeFile(file);
      }
      progress.files++;
      onProgress(progress);
    }
    return { files: objects.length, bytes: progress.totalBytes };
  }

  unpin(path: string): number {
    const key = pathToKey(path);
    let n = 0;
    for (const s of this.vault.status(key)) {
      if ((s.key === key || s.key.startsWith(dirPrefix(path))) && s.pinned && this.vault.setPinned(s.key, false)) n++;
    }
    return n;
  }

  status(path: string): FileStatus[] {
    const key = pathToKey(path);
    return this.vault.status(key).filter((s) => this.under(path, s.key));
  }

  private under(path: string, key: string): boolean {
    const k = pathToKey(path);
    return k === '' || key === k || key.startsWith(dirPrefix(path));
  }

  /** Pending uploads, conflicts met, and files whose transfers stopped on an error, under a path; deletes not yet sent (all). */
  queue(path: string): { pending: QueueEntry[]; deletes: number; conflicts: Conflict[]; offline: boolean } {
    return {
      pending: this.vault.queue().filter((q) => this.under(path, q.key)),
      deletes: this.vault.pendingDeletes,
      conflicts: this.vault.conflicts.filter((c) => this.under(path, c.key)),
      offline: (this.vault.storage as Partial<PoweredStorage>).power === 'offline',
    };
  }

  /** ResetErrorState for the files under a path; returns how many had an error. */
  resetErrors(path: string): number {
    const failed = this.status(path).filter((s) => s.lastError !== 0);
    for (const s of failed) this.vault.resetErrorState(s.key);
    return failed.length;
  }

  /** Upload the pending changes under a path now; with wait, resolve once they are in storage. */
  async flush(path: string, wait: boolean, onProgress: (p: Progress) => void): Promise<FlushCounts> {
    const pending = this.status(path).filter((s) => s.status === FILE_STATUS.CHANGED || s.status === FILE_STATUS.ORPHAN);
    // Journaled deletes go too (all of them: they are few requests, and a path's own are hard to tell apart).
    const deletes = this.vault.pendingDeletes;
    const dirs = pending.filter((s) => s.key.endsWith('/')).length;
    const counts = { files: pending.length - dirs, dirs, deletes };
    if (!wait) {
      this.vault.sendDeletes().catch(() => undefined); // a failure is retried by the delete queue, and logged
      for (const s of pending) await this.vault.flushFile(s.key, FLUSH_MODE.ASYNC);
      return counts;
    }
    // A mount that went offline learns storage is back at its next probe: the user asking now is a reason to look.
    // Still out of reach, the deletes' failure below says so at once.
    await this.vault.checkOnline();
    await this.vault.sendDeletes();
    const progress: Progress = { doneBytes: 0, totalBytes: pending.reduce((n, s) => n + s.size, 0), files: 0, totalFiles: pending.length, current: '' };
    // All queued at once (the write-back queue bounds how many run); the first failure is reported.
    const results = await Promise.allSettled(
      pending.map(async (s) => {
        await this.vault.flushFile(s.key, FLUSH_MODE.SYNC);
        progress.current = s.key;
        progress.files++;
        progress.doneBytes += s.size;
        onProgress(progress);
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return counts;
  }

  // ---- versions (S3 versioning) ----

  private async versioned(op: string, path: string) {
    const v = this.vault.storage.versions;
    const state = v ? await v.versioning() : 'Off';
    if (!v || state === 'Off') throw new FsError(E.EOPNOTSUPP, op, path, `versioning is not enabled on ${this.vault.storage.description}: S3 keeps no earlier versions to show`);
    return v;
  }

  /** `s3vault versions`: every stored version of a file, newest first, delete markers included. */
  async versions(path: string): Promise<VersionRow[]> {
    const key = pathToKey(path);
    const v = await this.versioned('versions', path);
    const { versions } = await v.listVersions(key, { onlyKey: key });
    if (!versions.length) throw new FsError(E.ENOENT, 'versions', path, 'no stored versions');
    return versions.map((x) => ({ time: x.lastModified.toISOString(), size: x.size, versionId: x.versionId, latest: x.isLatest, deleted: x.deleteMarker }));
  }

  /**
   * `s3vault restore --as-of`: the version current at that instant becomes the current one again, by a server-side
   * copy (no data through s3vault). Refused while the file has changes not uploaded (they would overwrite it).
   */
  async restore(path: string, asOf: Date): Promise<VersionRow & { restoredAs: string | undefined }> {
    const key = pathToKey(path);
    const v = await this.versioned('restore', path);
    const rec = this.vault.record(key);
    if (rec?.dirty) throw new FsError(E.EBUSY, 'restore', path, 'the file has changes not uploaded yet: flush them (s3vault flush --wait) or delete the file first');
    const { versions } = await v.listVersions(key, { onlyKey: key });
    const found = versions.find((x) => x.lastModified.getTime() <= asOf.getTime());
    if (!found) throw new FsError(E.ENOENT, 'restore', path, `no version as old as ${asOf.toISOString()}`);
    if (found.deleteMarker) throw new FsError(E.ENOENT, 'restore', path, `the file was deleted at ${asOf.toISOString()} (a delete marker of ${found.lastModified.toISOString()})`);
    const r = await v.copyVersion(key, found.versionId, key);
    return { time: found.lastModified.toISOString(), size: found.size, versionId: found.versionId, latest: false, deleted: false, restoredAs: r.versionId };
  }
}

export interface VersionRow {
  time: string;
  size: number;
  versionId: string;
  latest: boolean;
  deleted: boolean;
}
