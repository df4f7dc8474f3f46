/**
 * The metadata cache (CBFS MetadataCache + NonExistentFilesCache, R24/R25): what a key is, with a lifetime.
 * `complete` entries came from HEAD (they carry the POSIX metadata); listings give incomplete ones (kind,
 * size, ETag only). A null info is a cached "does not exist". Oldest entries go first past maxEntries.
 * Directory listings live in the vault (ListingStore) with their own lifetime: a name missing from a fresh
 * listing is known not to exist without a request (what makes `tar x` and `cp -r` cheap), and a warm `ls`
 * needs none. Every change recorded here is applied to the stored listing too, so it stays true.
 */
import type { ListedEntry, ListingStore, ListingWatch } from '../../cache/listings.js';
import type { FileInfo } from '../cbfs/events.js';

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

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly listings: ListingStore,
    /** How long a directory listing is taken as true. */
    readonly listingTtlMs: number,
  ) {}

  /** How many keys it holds at most. */
  get capacity(): number {
    return this.maxEntries;
  }

  get(key: string): CachedInfo | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires < Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  /**
   * Record what a key now is after a change or (`lookedUp`) what storage said of it; the stored listing of its
   * directory follows.
   */
  set(key: string, value: CachedInfo, lookedUp = false): void {
    const [prefix, name] = splitKey(key);
    const info = value.info;
    // A complete answer (HEAD) is kept with the listing entry: the next walk needs no request for it.
    // Its decoded form goes along: the first listing after a cold `ls -l` would otherwise parse every entry again.
    const meta = value.complete ? JSON.stringify(info) : null;
    this.listings.setEntry(prefix, name, info && { kind: info.kind === 'dir' ? 'dir' : 'file', size: info.size, etag: value.etag ?? '', modifiedMs: info.mtimeMs, meta, decoded: meta ? { ...info } : undefined }, lookedUp);
    this.remember(key, value);
  }

  /** Record what a listing just said of a key (the stored listing already says it). */
  remember(key: string, value: CachedInfo): void {
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

  /** Forget a key, everything under it as a directory, and the listings of its directory and below (refresh). */
  forgetUnder(key: string): void {
    this.forgetTree(key);
    this.listings.drop(splitKey(key)[0]);
  }

  /** The same, but its directory's listing stays: a change of the key itself is then recorded on it (`set`). */
  forgetTree(key: string): void {
    const prefix = key === '' ? '' : `${key}/`;
    for (const k of [...this.entries.keys()]) if (k === key || k.startsWith(prefix)) this.entries.delete(k);
    this.listings.dropUnder(prefix);
  }

  /** Store a directory's listing (prefix "" or "dir/") as just taken; with the watch started before asking for it. */
  setListing(prefix: string, entries: ListedEntry[], watch?: ListingWatch): void {
    this.listings.put(prefix, entries, watch);
  }

  /** Before a LIST: changes recorded until its answer is stored are kept on top of it (see ListingStore.watch). */
  watchListing(prefix: string): ListingWatch {
    return this.listings.watch(prefix);
  }

  unwatchListing(watch: ListingWatch): void {
    this.listings.unwatch(watch);
  }

  /** A fresh stored listing of a prefix, if any. */
  listing(prefix: string, maxAgeMs = this.listingTtlMs): ListedEntry[] | undefined {
    return this.listings.get(prefix, maxAgeMs);
  }

  /**
   * What the last listing of the parent said of a key: however old (offline answers), or only if fresh. A fresh
   * listing's "absent" holds for the metadata lifetime only (what the nonexistent-files cache keeps, R25): an
   * object another tool adds shows within that lifetime even where the directory was listed (after it, the
   * caller lists the directory again — one request for the whole directory).
   */
  lastListed(key: string, freshOnly = false): ListedEntry | 'absent' | undefined {
    const [prefix, name] = splitKey(key);
    const listed = this.listings.lookup(prefix, name, freshOnly ? this.listingTtlMs : Number.POSITIVE_INFINITY);
    if (listed === 'absent' && freshOnly && this.ttlMs < this.listingTtlMs) return this.listings.lookup(prefix, name, this.ttlMs);
    return listed;
  }
}
