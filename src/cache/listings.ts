/**
 * Directory listings stored in the vault (what a ListObjectsV2 with delimiter returned, per prefix), with the
 * time they were taken. The owner reads them while they are younger than its lifetime, and keeps them true
 * for changes made through it (setEntry); anything else ages out.
 */
import type { Db } from './db.js';

export interface ListedEntry {
  name: string;
  kind: 'file' | 'dir';
  size: number;
  etag: string;
  modifiedMs: number;
  /** The owner's full description of the entry (JSON), when it has looked the name up; absent: only the listing's facts. */
  meta?: string | null;
  /** The same, decoded, as the owner handed it over with setEntry (never stored: entries read back lack it). */
  decoded?: unknown;
}

export interface Row {
  name: string;
  kind: number;
  size: number;
  etag: string;
  modified_ms: number;
  meta: string | null;
  /** ListedEntry.decoded, carried from setEntry to the decoded copies of recent listings. */
  decoded?: unknown;
}

/** How long setEntry's changes wait to be written together (they are read from memory meanwhile). */
const FLUSH_DELAY_MS = 50;
/** Listings kept decoded in memory (see ListingStore.recent). */
const RECENT_LISTINGS = 8;
/** Prefixes whose listing time is kept in memory (see ListingStore.times). */
const KNOWN_TIMES = 4096;
/** Single names' entries kept in memory (see ListingStore.names). */
const KNOWN_NAMES = 16384;

const pendingKey = (prefix: string, name: string): string => `${prefix}\0${name}`;

const toRow = (e: ListedEntry): Row => ({ name: e.name, kind: e.kind === 'dir' ? 1 : 0, size: e.size, etag: e.etag, modified_ms: Math.round(e.modifiedMs), meta: e.meta ?? null, decoded: e.decoded });
const toEntry = (r: Row): ListedEntry => ({ name: r.name, kind: r.kind === 1 ? 'dir' : 'file', size: r.size, etag: r.etag, modifiedMs: r.modified_ms, meta: r.meta, decoded: r.decoded });

interface PendingEntry {
  prefix: string;
  name: string;
  row: Row | null;
}

/** Changes made through the mount to a prefix while a LIST of it is in flight (see watch). */
export interface ListingWatch {
  prefix: string;
  changes: Map<string, Row | null>;
  /** Names whose last change is only what storage said of them (a look-up), not a change made through the mount. */
  lookedUp: Set<string>;
}

export class ListingStore {
  private readonly s;
  /** LISTs in flight, by prefix: their answers may predate changes made meanwhile, which are replayed on them. */
  private readonly watches = new Map<string, Set<ListingWatch>>();
  /**
   * setEntry's changes, written together in one transaction FLUSH_DELAY_MS later: `ls -l` over a fresh listing
   * records thousands of HEAD results, and one SQLite commit each (or each turn of the event loop) was a large share
   * of its CPU.
   * Reads see them at once (lookup consults them; every other method writes them first).
   */
  private readonly pending = new Map<string, PendingEntry>();
  /**
   * The last listings read, as read (a warm `ls` of a large directory read and decoded every row each time);
   * changed entries are applied to them, anything else written to a prefix forgets its copy.
   */
  private readonly recent = new Map<string, ListedEntry[]>();
  /** Where each name sits in a recent listing. */
  private readonly indexes = new WeakMap<ListedEntry[], Map<string, number>>();
  private flushScheduled = false;
  /**
   * When each prefix was listed (null: never), as stored: every look-up of a name asks whether its directory's
   * listing is fresh, several times per file a `cp -r` creates. Filled only outside transactions; every write of a
   * listing's time forgets it first.
   */
  private readonly times = new Map<string, number | null>();
  /**
   * What the stored listings say of single names (null: not listed), by prefix, as read: a `cp -r` looks each new
   * name up four times (LOOKUP, CREATE and the upload's entry). Filled only outside transactions; every write of a
   * prefix's entries forgets what it touches first.
   */
  private readonly names = new Map<string, Map<string, Row | null>>();
  private namesCount = 0;

  constructor(private readonly db: Db) {
    this.s = {
      listedAt: db.prepare('SELECT listed_ms FROM listings WHERE prefix = ?'),
      entries: db.prepare('SELECT name, kind, size, etag, modified_ms, meta FROM listing_entries WHERE prefix = ? ORDER BY name'),
      entry: db.prepare('SELECT name, kind, size, etag, modified_ms, meta FROM listing_entries WHERE prefix = ? AND name = ?'),
      putListing: db.prepare('INSERT INTO listings (prefix, listed_ms) VALUES (?, ?) ON CONFLICT (prefix) DO UPDATE SET listed_ms = excluded.listed_ms'),
      clearEntries: db.prepare('DELETE FROM listing_entries WHERE prefix = ?'),
      putEntry: db.prepare(
        'INSERT INTO listing_entries (prefix, name, kind, size, etag, modified_ms, meta) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (prefix, name) DO UPDATE SET kind = excluded.kind, size = excluded.size, etag = excluded.etag, modified_ms = excluded.modified_ms, meta = excluded.meta',
      ),
      dropEntry: db.prepare('DELETE FROM listing_entries WHERE prefix = ? AND name = ?'),
      drop: db.prepare('DELETE FROM listings WHERE prefix = ?'),
      clear: db.prepare('DELETE FROM listings'),
      dropUnder: db.prepare('DELETE FROM listings WHERE substr(prefix, 1, length(@p)) = @p'),
    };
  }

  /** Write setEntry's pending changes now. */
  flush(): void {
    if (!this.pending.size) return;
    const batch = [...this.pending.values()];
    this.pending.clear();
    this.updateRecent(batch);
    for (const { prefix, name } of batch) this.forgetName(prefix, name);
    try {
      this.db.transaction(() => {
        for (const { prefix, name, row } of batch) {
          // Its listing may have been replaced or dropped since: only listed prefixes keep entries.
          if (this.listedAt(prefix) === undefined) continue;
          if (row) this.s.putEntry.run(prefix, name, row.kind, row.size, row.etag, row.modified_ms, row.meta);
          else this.s.dropEntry.run(prefix, name);
        }
      })();
    } catch {
      // Not committed (the vault's disk full): the changes wait for the next flush, unless newer ones replaced them.
      for (const e of batch) if (!this.pending.has(pendingKey(e.prefix, e.name))) this.pending.set(pendingKey(e.prefix, e.name), e);
      this.schedule();
    }
  }

  /**
   * Apply changed entries to the decoded copies of their listings: a cold `ls -l` records what each HEAD taught,
   * and forgetting the copy at every change made the first warm listing read and decode every row again. A copy
   * gaining or losing a name is forgotten (the rows have the order). Copied on write: callers may hold the old array.
   */
  private updateRecent(batch: PendingEntry[]): void {
    const copied = new Set<string>();
    for (const { prefix, name, row } of batch) {
      const list = this.recent.get(prefix);
      if (!list) continue;
      const index = this.indexOf(list);
      const at = index.get(name);
      if (!row || at === undefined) {
        this.recent.delete(prefix);
        continue;
      }
      let target = list;
      if (!copied.has(prefix)) {
        target = list.slice();
        this.indexes.set(target, index);
        this.recent.set(prefix, target);
        copied.add(prefix);
      }
      target[at] = toEntry(row);
    }
  }

  /** Where each name sits in a recent listing (made on first use). */
  private indexOf(list: ListedEntry[]): Map<string, number> {
    let index = this.indexes.get(list);
    if (!index) this.indexes.set(list, (index = new Map(list.map((e, i) => [e.name, i]))));
    return index;
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setTimeout(() => {
      this.flushScheduled = false;
      this.flush();
    }, FLUSH_DELAY_MS).unref();
  }

  private currentRow(prefix: string, name: string): Row | undefined {
    const p = this.pending.get(pendingKey(prefix, name));
    if (p) return p.row ?? undefined;
    const known = this.names.get(prefix)?.get(name);
    if (known !== undefined) return known ?? undefined;
    // A recent copy holds every stored row of its prefix (pending changes are above): a cold `ls -l` looks up every
    // name of the listing readdir just read, and a query each was a tenth of s3vault's CPU there.
    const list = this.recent.get(prefix);
    if (list) {
      const at = this.indexOf(list).get(name);
      return at === undefined ? undefined : toRow(list[at]!);
    }
    const row = this.s.entry.get(prefix, name) as Row | undefined;
    this.keepName(prefix, name, row ?? null);
    return row;
  }

  private keepName(prefix: string, name: string, row: Row | null): void {
    if (this.db.inTransaction) return;
    let known = this.names.get(prefix);
    if (!known) this.names.set(prefix, (known = new Map()));
    if (!known.has(name)) this.namesCount++;
    known.set(name, row);
    // The directories looked up longest ago go first, whole.
    while (this.namesCount > KNOWN_NAMES) this.forgetNames(this.names.keys().next().value!);
  }

  private forgetName(prefix: string, name: string): void {
    if (this.names.get(prefix)?.delete(name)) this.namesCount--;
  }

  private forgetNames(prefix: string): void {
    const known = this.names.get(prefix);
    if (!known) return;
    this.namesCount -= known.size;
    this.names.delete(prefix);
  }

  /** When the prefix was listed, if it has a stored listing. */
  private listedAt(prefix: string): number | undefined {
    const known = this.times.get(prefix);
    if (known !== undefined) return known ?? undefined;
    const at = (this.s.listedAt.get(prefix) as { listed_ms: number } | undefined)?.listed_ms;
    if (!this.db.inTransaction) {
      if (this.times.size >= KNOWN_TIMES) this.times.delete(this.times.keys().next().value!);
      this.times.set(prefix, at ?? null);
    }
    return at;
  }

  private fresh(prefix: string, maxAgeMs: number): boolean {
    const at = this.listedAt(prefix);
    return at !== undefined && Date.now() - at <= maxAgeMs;
  }

  /** The listing of a prefix if it is younger than maxAgeMs. Callers must not change the entries. */
  get(prefix: string, maxAgeMs: number): ListedEntry[] | undefined {
    if (!this.fresh(prefix, maxAgeMs)) return undefined;
    this.flush();
    let entries = this.recent.get(prefix);
    if (entries) {
      this.recent.delete(prefix);
    } else {
      entries = (this.s.entries.all(prefix) as Row[]).map(toEntry);
      if (this.recent.size >= RECENT_LISTINGS) this.recent.delete(this.recent.keys().next().value!);
    }
    this.recent.set(prefix, entries);
    return entries;
  }

  /** What a fresh listing says of one name: its entry, 'absent', or undefined when there is no fresh listing. */
  lookup(prefix: string, name: string, maxAgeMs: number): ListedEntry | 'absent' | undefined {
    if (!this.fresh(prefix, maxAgeMs)) return undefined;
    const row = this.currentRow(prefix, name);
    return row ? toEntry(row) : 'absent';
  }

  /**
   * Store a new listing of a prefix. What lookups taught about a name (meta) carries over from the previous listing
   * while the entry is the same object (same kind and ETag; a directory stays a directory).
   */
  put(prefix: string, entries: ListedEntry[], watch?: ListingWatch): void {
    this.flush();
    this.recent.delete(prefix);
    if (watch) this.unwatch(watch);
    this.times.delete(prefix);
    this.forgetNames(prefix);
    this.db.transaction(() => {
      const old = new Map((this.s.entries.all(prefix) as Row[]).map((r) => [r.name, r]));
      this.s.putListing.run(prefix, Date.now());
      this.s.clearEntries.run(prefix);
      for (const e of entries) {
        const before = old.get(e.name);
        const kept = e.meta ?? (before && (before.kind === 1) === (e.kind === 'dir') && before.etag === e.etag ? before.meta : null);
        this.s.putEntry.run(prefix, e.name, e.kind === 'dir' ? 1 : 0, e.size, e.etag, Math.round(e.modifiedMs), kept ?? null);
      }
      // The answer was taken before these changes landed (an upload finished, a file went): they stand.
      for (const [name, row] of watch?.changes ?? []) {
        if (row) this.s.putEntry.run(prefix, name, row.kind, row.size, row.etag, row.modified_ms, row.meta);
        else this.s.dropEntry.run(prefix, name);
      }
    })();
  }

  /**
   * A LIST of the prefix is about to be sent: every change recorded for it until its answer is stored (put with
   * this watch) is replayed on that answer, which may be older than them. unwatch when the LIST fails.
   */
  watch(prefix: string): ListingWatch {
    const w: ListingWatch = { prefix, changes: new Map(), lookedUp: new Set() };
    let set = this.watches.get(prefix);
    if (!set) this.watches.set(prefix, (set = new Set()));
    set.add(w);
    return w;
  }

  unwatch(w: ListingWatch): void {
    const set = this.watches.get(w.prefix);
    if (!set?.delete(w)) return;
    if (!set.size) this.watches.delete(w.prefix);
  }

  /**
   * Keep a stored listing true after a change made through the mount, or (`lookedUp`) a look-up's answer (no-op if
   * the prefix was never listed).
   */
  setEntry(prefix: string, name: string, entry: Omit<ListedEntry, 'name'> | null, lookedUp = false): void {
    const watching = this.watches.get(prefix);
    if (watching) {
      const row: Row | null = entry && toRow({ name, ...entry });
      for (const w of watching) {
        w.changes.set(name, row);
        if (lookedUp) w.lookedUp.add(name);
        else w.lookedUp.delete(name);
      }
    }
    if (this.listedAt(prefix) === undefined) return;
    const current = this.currentRow(prefix, name);
    if (!entry && !current) return;
    if (entry && current && toEntry(current).kind === entry.kind && current.size === entry.size && current.etag === entry.etag && (entry.meta === undefined || current.meta === entry.meta)) return;
    const sameObject = current !== undefined && entry !== null && (current.kind === 1) === (entry.kind === 'dir') && current.etag === entry.etag;
    const row: Row | null = entry && { ...toRow({ name, ...entry }), meta: entry.meta ?? (sameObject ? current.meta : null), decoded: entry.meta ? entry.decoded : undefined };
    this.pending.set(pendingKey(prefix, name), { prefix, name, row });
    this.schedule();
  }

  drop(prefix: string): void {
    this.flush();
    this.recent.delete(prefix);
    this.times.delete(prefix);
    this.forgetNames(prefix);
    this.s.drop.run(prefix);
  }

  /** Drop the listings of a prefix and of everything under it. */
  dropUnder(prefix: string): void {
    this.flush();
    for (const p of [...this.recent.keys()]) if (p.startsWith(prefix)) this.recent.delete(p);
    for (const p of [...this.times.keys()]) if (p.startsWith(prefix)) this.times.delete(p);
    for (const p of [...this.names.keys()]) if (p.startsWith(prefix)) this.forgetNames(p);
    this.s.dropUnder.run({ p: prefix });
  }

  clear(): void {
    this.pending.clear();
    this.recent.clear();
    this.times.clear();
    this.names.clear();
    this.namesCount = 0;
    this.s.clear.run();
  }
}
