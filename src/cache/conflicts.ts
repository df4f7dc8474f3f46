/**
 * Conflicts (FILE_MODIFIED_EXTERNALLY): an upload found the object changed in storage since the cached copy
 * was taken. The policy decides: keep-both (default) uploads the local version as `<name>.conflict-<UTC time>`
 * and lets the name show the other writer's object; local-wins replaces the object anyway; remote-wins drops
 * the local changes. Every conflict is logged and remembered for `s3vault status`.
 */
import type { Logger } from '../log.js';
import { RWRESULT, StorageError } from '../storage/rwresult.js';
import type { CachedFile, UploadOutcome } from './cached-file.js';

export type ConflictPolicy = 'keep-both' | 'local-wins' | 'remote-wins';

export interface Conflict {
  key: string;
  conflictKey: string | null;
  policy: ConflictPolicy;
  atMs: number;
}

/** `name.conflict-20261123T170000Z` */
export function conflictKeyFor(key: string, at = new Date()): string {
  return `${key}.conflict-${at.toISOString().replace(/[-:]|\.\d+/g, '')}`;
}

export interface ConflictHost {
  renameFile(fromKey: string, toKey: string): void;
  removeRecord(key: string): void;
}

export class ConflictResolver {
  /** The conflicts met so far (the last 1000). */
  readonly conflicts: Conflict[] = [];
  /** Told of each conflict, so the owner can drop what it caches of both names. */
  onConflict: (c: Conflict) => void = () => undefined;

  constructor(
    private readonly policy: ConflictPolicy,
    private readonly host: ConflictHost,
    private readonly log: Logger,
  ) {}

  /** Upload a file now (WriteData), applying the policy when the object changed in storage. */
  async upload(file: CachedFile): Promise<UploadOutcome> {
    try {
      return await file.upload();
    } catch (err) {
      if (!(err instanceof StorageError) || err.result !== RWRESULT.FILE_MODIFIED_EXTERNALLY) throw err;
      const key = file.key;
      const conflict: Conflict = { key, conflictKey: null, policy: this.policy, atMs: Date.now() };
      if (this.policy === 'local-wins') {
        this.log.warn({ key, policy: this.policy }, 'conflict: the object changed in storage; the local version replaces it');
        this.remember(conflict);
        return file.upload({ force: true });
      }
      if (this.policy === 'remote-wins') {
        this.log.warn({ key, policy: this.policy }, 'conflict: the object changed in storage; the local changes are dropped');
        this.remember(conflict);
        this.host.removeRecord(key);
        return 'uploaded';
      }
      conflict.conflictKey = conflictKeyFor(key);
      await file.upload({ toKey: conflict.conflictKey });
      this.host.renameFile(key, conflict.conflictKey);
      this.log.warn({ key, savedAs: conflict.conflictKey }, 'conflict: the object changed in storage; the local version was saved beside it');
      this.remember(conflict);
      return 'uploaded';
    }
  }

  private remember(c: Conflict): void {
    this.conflicts.push(c);
    if (this.conflicts.length > 1000) this.conflicts.shift();
    this.onConflict(c);
  }
}
