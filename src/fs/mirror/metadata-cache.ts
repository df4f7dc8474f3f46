/**
 * The metadata cache (CBFS MetadataCache + NonExistentFilesCache, R24/R25): what a key is, with a lifetime.
 * `complete` entries came from HEAD (they carry the POSIX metadata); listings give incomplete ones (kind,
 * size, ETag only). A null info is a cached "does not exist". Oldest entries go first past maxEntries.
 * It also remembers recent directory listings, so a name missing from a fresh listing is known not to exist
 * without a request (what makes `tar x` and `cp -r` lookups cheap); changes through the mount keep them true.
 */
import type { FileInfo, FileKind } from '../cbfs/events.js';

const MAX_LISTINGS = 64;

interface Listing {
  names: Map<string, FileKind>;
  expires: number;
}

function splitKey(key: string): [string, string] {
  const cut = key.lastIndexOf('/');
  return cut < 0 ? ['', key] : [key.slice(0, cut + 1), key.slice(cut + 1)];
}

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
  private readonly listings = new Map<string, Listing>();

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
    const [prefix, name] = splitKey(key);
    const listing = this.listings.get(prefix);
    if (listing) {
      if (value.info) listing.names.set(name, value.info.kind);
      else listing.names.delete(name);
    }
    this.entries.delete(key);
    this.entries.set(key, { ...value, expires: Date.now() + this.ttlMs });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
    this.listings.clear();
  }

  /** Remember the names of a directory (prefix "" or "dir/") as just listed. */
  setListing(prefix: string, names: Map<string, FileKind>): void {
    this.listings.delete(prefix);
    this.listings.set(prefix, { names, expires: Date.now() + this.ttlMs });
    if (this.listings.size > MAX_LISTINGS) this.listings.delete(this.listings.keys().next().value!);
  }

  /** What a fresh listing of the parent says of a key: its kind, 'absent', or undefined if not known. */
  listed(key: string): FileKind | 'absent' | undefined {
    const [prefix, name] = splitKey(key);
    const listing = this.listings.get(prefix);
    if (!listing) return undefined;
    if (listing.expires < Date.now()) {
      this.listings.delete(prefix);
      return undefined;
    }
    return listing.names.get(name) ?? 'absent';
  }
}
