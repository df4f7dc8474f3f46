/**
 * The metadata cache (CBFS MetadataCache + NonExistentFilesCache, R24/R25): what a key is, with a lifetime.
 * `complete` entries came from HEAD (they carry the POSIX metadata); listings give incomplete ones (kind,
 * size, ETag only). A null info is a cached "does not exist". Oldest entries go first past maxEntries.
 */
import type { FileInfo } from '../cbfs/events.js';

export interface CachedInfo {
  info: FileInfo | null;
  etag?: string;
  complete: boolean;
}

interface Entry extends CachedInfo {
  expires: number;
}

export class MetadataCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}

  get(key: string): CachedInfo | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires < Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  set(key: string, value: CachedInfo): void {
    this.entries.delete(key);
    this.entries.set(key, { ...value, expires: Date.now() + this.ttlMs });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
