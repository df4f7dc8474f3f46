/**
 * What is at a path: the mirror's namespace. Answers come from, in order: the vault's record of a file that
 * is open or has changes (local state wins), the metadata cache, the stored listing of the parent (a name it
 * lacks does not exist), and storage (HEAD for a file, a one-key LIST for a directory, in parallel). Offline,
 * what the vault knows answers. Directory listings merge storage's with files not uploaded yet.
 */
import PQueue from 'p-queue';
import type { Vault } from '../../cache/vault.js';
import type { ListedEntry, ListingWatch } from '../../cache/listings.js';
import type { FileRecord } from '../../cache/cached-file.js';
import type { Listing, ListOptions, ObjectInfo } from '../../storage/driver.js';
import { StorageError } from '../../storage/rwresult.js';
import type { DirEntry, FileInfo } from '../cbfs/events.js';
import { E, FsError } from '../errors.js';
import { checkPath, dirPrefix, isShadowedPath, pathToKey, segmentName, shadowedName, UnresolvedAlias } from './keys.js';
import { decodeMeta, S_IFLNK, S_IFMT, type Owner } from './meta.js';
import type { MetadataCache } from './metadata-cache.js';
import { PagedListing } from './paged-listing.js';

/**
 * A walk's HEADs ahead of it, and how many at once. s3rver answers many at once for less CPU each: a cold `ls -l` of
 * 10 000 files took 8.2-8.4 s at 64 against 9.4-12.1 s at 16 (and s3fs 8.4-8.6 s), 3-4 runs each alternating.
 */
const PREFETCH_WINDOW = 256;
const PREFETCH_CONCURRENCY = 64;
/** Directories whose prefetch window is remembered at once. */
const PREFETCH_DIRS = 64;
const LOOKUP_LIST_MAX = 10_000;
/** This many look-ups in a directory within SIBLINGS_MS make a walk, which lists it (see listsParentFor). */
const WALK_LOOKUPS = 3;
const SIBLINGS_MS = 10_000;
/** Listings this long load the vault's records of the directory at once instead of per entry. */
const BULK_RECORDS = 256;

/** What a vault record shows: a file, or (`dir`) the directory of a marker record (key `dir/`). */
export function recordInfo(rec: FileRecord, kind: 'file' | 'dir' = 'file'): FileInfo {
  // A symlink made here is a record whose mode keeps S_IFLNK (its data is the target): see createSymlink.
  const link = kind === 'file' && (rec.mode & S_IFMT) === S_IFLNK;
  return { kind: link ? 'symlink' : kind, size: kind === 'dir' ? 0 : rec.size, mode: rec.mode & 0o7777, uid: rec.uid, gid: rec.gid, mtimeMs: rec.mtimeMs, xattrs: rec.xattrs ?? null };
}

/** In a stored listing, the file that a same-named directory shadows (names never hold NUL). */
const SHADOWED_ENTRY = '\0file';

export class Namespace {
  /** Odd keys already reported in the log (once each). */
  private readonly reported = new Set<string>();
  /** Sibling HEADs started by prefetchSiblings, by key; per directory, its files to prefetch and how far. */
  private readonly heads = new Map<string, Promise<FileInfo | null>>();
  private readonly ahead = new Map<string, { names: string[]; index: Map<string, number>; started: number; at: number; paged: boolean }>();
  /** Decoded attributes of listed entries (the listing store hands out the same entry objects while unchanged). */
  private readonly decodedMeta = new WeakMap<ListedEntry, FileInfo>();
  private readonly headQueue = new PQueue({ concurrency: PREFETCH_CONCURRENCY });
  /** Parent listings started by look-ups, by prefix; directories found too large to list for a look-up. */
  private readonly parentListings = new Map<string, Promise<boolean>>();
  /** Those listings' pages so far, by prefix, for the look-ups waiting on them (see PagedListing). */
  private readonly pages = new Map<string, PagedListing>();
  private readonly tooBig = new Set<string>();
  /** Directories not listed yet: look-ups in each so far, since when (see listsParentFor). */
  private readonly recentLookups = new Map<string, { count: number; at: number }>();
  /** fs.listingAttributes: a listed file or directory is shown with what the listing says, no HEAD. */
  listingAttributes = false;

  constructor(
    private readonly vault: Vault,
    private readonly cache: MetadataCache,
    private readonly owner: Owner,
    private readonly mountedAt: number,
    private readonly onOddKey: (key: string, rule: string) => void = () => {},
  ) {}

  private oddKey(key: string, rule: string): void {
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.onOddKey(key, rule);
  }

  private get storage() {
    return this.vault.storage;
  }

  rootInfo(): FileInfo {
    return { kind: 'dir', size: 0, mode: 0o755, uid: this.owner.uid, gid: this.owner.gid, mtimeMs: this.mountedAt };
  }

  async getFileInfo(path: string): Promise<FileInfo | null> {
    if (path === '/') return this.rootInfo();
    try {
      return await this.infoOf(path);
    } catch (err) {
      if (!(err instanceof UnresolvedAlias)) throw err;
      // A long name's alias after a remount: listing the parent teaches it.
      await this.enumerateDirectory(path.slice(0, path.lastIndexOf('/')) || '/');
      try {
        return await this.infoOf(path);
      } catch (again) {
        if (again instanceof UnresolvedAlias) return null;
        throw again;
      }
    }
  }

  /**
   * The marker record of a directory made here (mkdir) that storage has not got yet: until it is uploaded, the
   * directory exists only in the vault — and whatever storage or the caches say of the name, it is there.
   */
  pendingMarker(key: string): FileRecord | undefined {
    const rec = this.vault.record(`${key}/`);
    return rec && (rec.dirty || rec.remoteEtag === null) ? rec : undefined;
  }

  private async infoOf(path: string): Promise<FileInfo | null> {
    const info = await this.storedInfoOf(path);
    if (info?.kind === 'file' || info?.kind === 'symlink') return info;
    // A directory (or nothing): the marker's record, while its upload is to come, holds what storage does not yet.
    const marker = this.pendingMarker(pathToKey(path));
    return marker ? recordInfo(marker, 'dir') : info;
  }

  private async storedInfoOf(path: string): Promise<FileInfo | null> {
    checkPath(path, 'getattr');
    const key = pathToKey(path);
    const rec = this.vault.record(key);
    // Local state wins while the file is open or has changes that storage does not have yet.
    if (rec && (rec.dirty || rec.remoteEtag === null || this.vault.isOpen(key))) return recordInfo(rec);
    // Removed here, its delete journaled but not yet sent: gone, whatever storage and the listings still say.
    if (this.vault.deletePending(key)) return null;
    // The file a same-named directory shadows: the caches speak of the directory, so ask storage.
    if (isShadowedPath(path)) {
      const object = await this.storage.head(key);
      return object && decodeMeta('file', object.size, object.lastModified, object.meta, this.owner);
    }
    const cached = this.cache.get(key);
    // A directory known only from a listing lacks its marker's attributes (mode, owner, time): look it up.
    if (cached && (cached.complete || cached.info === null)) return cached.info;
    // Removed here (rmdir), its marker's delete not yet sent: storage and its listings still show it, so storage is
    // asked past the journal (lookupRemote, below).
    const removedDir = this.vault.pendingDeletes > 0 && key !== '' && this.vault.deletePending(`${key}/`);
    let listed = removedDir ? undefined : this.cache.lastListed(key, true);
    if (listed === undefined && !removedDir && this.listsParentFor(key)) listed = await this.listedByParent(key);
    if (listed === 'absent') return null;
    // A fresh listing entry that a lookup completed: everything is known, no request.
    if (listed?.meta) {
      const info = JSON.parse(listed.meta) as FileInfo;
      this.cache.remember(key, { info, etag: listed.etag || undefined, complete: true });
      return info;
    }
    // Listing attributes (an opt-in): what the listing says is the answer; opening the file asks for the rest.
    if (this.listingAttributes && listed && !listed.meta) {
      const info = decodeMeta(listed.kind, listed.size, new Date(listed.kind === 'dir' ? this.mountedAt : listed.modifiedMs), undefined, this.owner);
      this.cache.remember(key, { info, etag: listed.etag || undefined, complete: listed.kind === 'dir' });
      return info;
    }
    // The vault holds this very version: its record knows the attributes, no HEAD needed.
    if (listed?.kind === 'file' && rec && rec.remoteEtag === listed.etag) {
      const info = recordInfo(rec);
      this.cache.remember(key, { info, etag: rec.remoteEtag, complete: true });
      return info;
    }
    try {
      if (listed === undefined) return await this.lookupRemote(key);
      if (listed.kind === 'dir') {
        // Listed as a directory: its marker, if it has one, holds its attributes (one HEAD).
        // The listing saw it as a prefix, so it is a directory (one of the same name that is a file is shown under
        // an alias): only its attributes are missing — on its marker, or the defaults if it has none.
        const marker = await this.storage.head(`${key}/`);
        const info = decodeMeta('dir', 0, marker?.lastModified ?? new Date(this.mountedAt), marker?.meta, this.owner);
        this.cache.set(key, { info, complete: true }, true);
        return info;
      }
      // `ls -l`, `stat *`: the first look-up of a listed file starts HEADs for its listed siblings, in parallel.
      this.prefetchSiblings(key);
      const pending = this.heads.get(key);
      if (pending) return await pending;
      return await this.lookupRemote(key, true);
    } catch (err) {
      const offline = this.offlineInfo(key, err);
      if (offline === undefined) throw err;
      return offline;
    }
  }

  /**
   * Storage unreachable (a transient failure): what the vault knows still answers — a cached file's record,
   * a directory that holds cached files, the last listing of the parent however old; a name it does not know
   * is absent, so new files can be created offline (an upload meeting an object of that name later is a
   * conflict, handled by the conflict policy). undefined: not an offline failure, the error stands.
   */
  private offlineInfo(key: string, err: unknown): FileInfo | null | undefined {
    if (!(err instanceof StorageError) || !err.transient) return undefined;
    const rec = this.vault.record(key);
    if (rec) return recordInfo(rec);
    // A directory: its marker's record (made or moved here, uploaded or not: it keeps the attributes), else what a
    // look-up taught its listing entry. Before, a directory holding cached files showed the defaults offline (0755):
    // its mode flipped while storage was away.
    const marker = this.vault.record(`${key}/`);
    if (marker) return recordInfo(marker, 'dir');
    const listed = this.cache.lastListed(key);
    if (listed && listed !== 'absent' && listed.meta) return this.metaOf(listed);
    if (this.vault.recordsUnder(`${key}/`).length) return this.rootInfo();
    if (listed && listed !== 'absent') return decodeMeta(listed.kind, listed.size, new Date(listed.modifiedMs), undefined, this.owner);
    return null;
  }

  /**
   * After a directory was listed, a look-up of one of its files HEADs the next PREFETCH_WINDOW files of the listing
   * that lack their metadata (PREFETCH_CONCURRENCY at a time), as `ls -l` and `stat *` ask for them in that order;
   * each later look-up slides the window on. So a walk over a directory's files keeps HEADs in flight ahead of it,
   * and a look-up of a few files costs a window, not the whole directory. `find` and `ls -f` never look files up.
   */
  private prefetchSiblings(key: string): void {
    const cut = key.lastIndexOf('/') + 1;
    const prefix = key.slice(0, cut);
    let run = this.ahead.get(prefix);
    if (!run || run.paged || Date.now() - run.at > 60_000) {
      // While the listing comes page by page, its files so far (a list that grows at its end, positions kept).
      const paged = this.pages.get(prefix);
      const stored = paged ? undefined : this.cache.listing(prefix);
      const names = paged ? paged.fileNames : (stored ?? []).filter((e) => e.kind === 'file' && !e.meta).map((e) => e.name);
      const index = paged ? paged.fileIndex : new Map(names.map((n, i) => [n, i]));
      run = { names, index, started: run?.paged && paged ? run.started : 0, at: Date.now(), paged: paged !== undefined };
      this.ahead.delete(prefix);
      this.ahead.set(prefix, run);
      // Only the directories being walked now: the oldest goes (a long walk over many directories stays small).
      if (this.ahead.size > PREFETCH_DIRS) this.ahead.delete(this.ahead.keys().next().value!);
    }
    const at = run.index.get(key.slice(cut));
    if (at === undefined) return;
    const to = Math.min(run.names.length, at + 1 + PREFETCH_WINDOW);
    for (let i = Math.max(run.started, at + 1); i < to; i++) {
      const k = prefix + run.names[i]!;
      if (this.heads.has(k) || this.cache.get(k)?.complete) continue;
      const p = this.headQueue.add(() => this.lookupRemote(k, true)) as Promise<FileInfo | null>;
      this.heads.set(k, p);
      p.catch(() => undefined).finally(() => this.heads.delete(k));
    }
    run.started = Math.max(run.started, to);
  }

  /**
   * Whether a look-up in a directory not listed yet lists it: from its third look-up within SIBLINGS_MS (a walk,
   * `stat f*`, `tar x` over it: one listing then answers every sibling, where a HEAD + LIST per name costs two
   * requests each), or while a listing of it is in flight. The first two are looked up alone (HEAD + one-key
   * LIST): `stat`, `mv a b`, `cp a b` should not pay for listing a large directory, or a root that the server lists
   * by reading every key one level below it (s3rver: 0.3 s of a 0.4 s `mv`).
   */
  private listsParentFor(key: string): boolean {
    const prefix = key.slice(0, key.lastIndexOf('/') + 1);
    if (this.parentListings.has(prefix)) return true;
    if (this.tooBig.has(prefix)) return false;
    const seen = this.recentLookups.get(prefix);
    this.recentLookups.delete(prefix);
    const count = seen && Date.now() - seen.at < SIBLINGS_MS ? seen.count + 1 : 1;
    if (count >= WALK_LOOKUPS) return true;
    this.recentLookups.set(prefix, { count, at: seen && count > 1 ? seen.at : Date.now() });
    if (this.recentLookups.size > PREFETCH_DIRS) this.recentLookups.delete(this.recentLookups.keys().next().value!);
    return false;
  }

  /**
   * List a key's parent for a look-up, once at a time per directory; true when a complete listing is now stored.
   * Directories past LOOKUP_LIST_MAX entries are left to per-name look-ups (listing them whole for one name would
   * cost more than it saves), and remembered as such.
   */
  private listParent(key: string): Promise<boolean> {
    const prefix = key.slice(0, key.lastIndexOf('/') + 1);
    if (this.tooBig.has(prefix)) return Promise.resolve(false);
    let p = this.parentListings.get(prefix);
    if (!p) {
      const watch = this.cache.watchListing(prefix);
      const paged = new PagedListing(prefix, this.mountedAt, (name) => watch.changes.has(name) && !watch.lookedUp.has(name), this.cache.listingTtlMs, PREFETCH_WINDOW);
      this.pages.set(prefix, paged);
      const onPage = (page: Listing): boolean | Promise<boolean> => {
        paged.add(page);
        return paged.next();
      };
      p = this.listRemote(prefix, LOOKUP_LIST_MAX, onPage, watch)
        .then((l) => {
          if (!l && !paged.isStopped) this.tooBig.add(prefix);
          return l !== undefined;
        })
        .catch(() => false) // storage's error (or offline state) is met again by the look-up itself
        .finally(() => {
          this.parentListings.delete(prefix);
          this.pages.delete(prefix);
        });
      this.parentListings.set(prefix, p);
    }
    return p;
  }

  /**
   * A key's entry in a look-up listing of its parent: as soon as the pages so far decide it, else once the listing
   * is stored (undefined if it is not: too large, or it failed).
   */
  private async listedByParent(key: string): Promise<ListedEntry | 'absent' | undefined> {
    const done = this.listParent(key);
    const cut = key.lastIndexOf('/') + 1;
    const paged = this.pages.get(key.slice(0, cut));
    if (paged) {
      const early = await Promise.race([paged.decided(key.slice(cut)), done.then(() => undefined)]);
      if (early !== undefined) return early;
    }
    return (await done) ? this.cache.lastListed(key, true) : undefined;
  }

  /** HEAD for a file's metadata and a one-key LIST for a directory, in parallel unless the kind is known. */
  async lookupRemote(key: string, knownFile = false): Promise<FileInfo | null> {
    const head = this.storage.head(key);
    // While deletes are journaled, those under the prefix must not make a directory of it (rmdir, rm -r).
    const children = knownFile
      ? null
      : this.vault.pendingDeletes
        ? this.liveKeys(`${key}/`, 1).then((objects): Listing => ({ objects, prefixes: [] }))
        : this.storage.list(`${key}/`, { delimiter: '/', maxKeys: 1 });
    children?.catch(() => undefined);
    const object = await head;
    // Removed while the HEAD was on its way (a prefetch for `ls -l`): what it found is about to be deleted.
    if (this.vault.deletePending(key)) return null;
    if (!object && knownFile) return this.lookupRemote(key, false);
    const listing = children ? await children : null;
    const isDir = listing !== null && (listing.objects.length > 0 || listing.prefixes.length > 0);
    if (object && isDir) this.oddKey(key, `a directory of the same name shadows it: shown as ${shadowedName(key.slice(key.lastIndexOf('/') + 1))}`);
    if (object && !isDir) {
      const info = decodeMeta('file', object.size, object.lastModified, object.meta, this.owner);
      this.cache.set(key, { info, etag: object.etag, complete: true }, true);
      return info;
    }
    if (listing && isDir) {
      const hasMarker = listing.objects.some((o) => o.key === `${key}/`);
      const marker = hasMarker ? await this.storage.head(`${key}/`) : null;
      const info = decodeMeta('dir', 0, marker?.lastModified ?? new Date(this.mountedAt), marker?.meta, this.owner);
      this.cache.set(key, { info, complete: true }, true);
      return info;
    }
    this.cache.set(key, { info: null, complete: true }, true);
    return null;
  }

  /**
   * The first keys under a prefix that storage has and that are not being deleted (journaled deletes are still in
   * storage until their batch goes): one LIST of `want` keys more than the journal holds under the prefix, so it
   * returns `want` live keys if there are that many. Those journaled when it starts are skipped: one confirmed
   * while it is on its way is gone all the same.
   */
  async liveKeys(prefix: string, want: number, offlineKnown = false): Promise<ObjectInfo[]> {
    const gone = new Set(this.vault.deletesUnder(prefix));
    let objects: ObjectInfo[];
    try {
      objects = (await this.storage.list(prefix, { maxKeys: gone.size + want })).objects;
    } catch (err) {
      const known = offlineKnown && err instanceof StorageError && err.transient ? this.knownKeys(prefix) : undefined;
      if (!known) throw err;
      objects = known;
    }
    return gone.size ? objects.filter((o) => !gone.has(o.key)) : objects;
  }

  /**
   * Storage unreachable: the keys under a directory the vault knows of — its last stored listing (however old;
   * a subdirectory stands as its marker's key) and the records under it — if it knows the directory: listed
   * before, or made here and not uploaded yet. undefined: it does not (the failure stands).
   */
  private knownKeys(prefix: string): ObjectInfo[] | undefined {
    const stored = this.storedListing(prefix, Number.POSITIVE_INFINITY);
    if (!stored && this.vault.record(prefix)?.remoteEtag !== null) return undefined;
    const keys = new Map<string, ObjectInfo>();
    const placeholder = (key: string): ObjectInfo => ({ key, size: 0, etag: '', lastModified: new Date(0) });
    for (const o of stored?.objects ?? []) keys.set(o.key, o);
    for (const p of stored?.prefixes ?? []) keys.set(p, placeholder(p));
    for (const rec of this.vault.recordsUnder(prefix)) if (rec.remoteEtag !== null) keys.set(rec.key, placeholder(rec.key));
    return [...keys.values()];
  }

  /**
   * Storage unreachable: the whole tree under a directory, as the vault knows it (knownKeys, directory by directory):
   * the keys of files storage holds (as last known, less journaled deletes) and every directory prefix, the top one
   * first. undefined: some directory in it was never listed nor made here, and may hold files the vault never saw.
   */
  knownTree(prefix: string): { files: string[]; dirs: string[] } | undefined {
    const gone = new Set(this.vault.deletesUnder(prefix));
    const files = new Set<string>();
    const dirs = new Set<string>();
    const walk = (dir: string): boolean => {
      if (dirs.has(dir)) return true;
      const known = this.knownKeys(dir);
      if (!known) return false;
      dirs.add(dir);
      for (const { key } of known) {
        if (key === dir || gone.has(key)) continue;
        if (!key.endsWith('/')) files.add(key);
        // Every directory between this one and the key (records reach below its listing): each is known, or the
        // tree is not.
        for (let cut = key.indexOf('/', dir.length); cut >= 0; cut = key.indexOf('/', cut + 1)) if (!walk(key.slice(0, cut + 1))) return false;
      }
      return true;
    };
    return walk(prefix) ? { files: [...files], dirs: [...dirs] } : undefined;
  }

  async enumerateDirectory(path: string): Promise<DirEntry[]> {
    const prefix = dirPrefix(path);
    // What look-ups taught about entries (kept with the stored listing), by name: those are exact, the rest
    // defaults. Decoded when used. From a fresh stored listing, files' entries come aligned with its objects.
    const known = new Map<string, ListedEntry>();
    const knownDirs = new Map<string, ListedEntry>();
    const learn = (stored: ListedEntry[], files: boolean) => {
      for (const e of stored) if (e.meta && (files || e.kind === 'dir')) (e.kind === 'file' ? known : knownDirs).set(e.name, e);
    };
    const fresh = this.cache.listing(prefix);
    let listing: Listing;
    let storedFiles: ListedEntry[] | undefined;
    if (fresh) {
      learn(fresh, false);
      storedFiles = [];
      listing = this.toListing(prefix, fresh, storedFiles);
    } else {
      // A look-up listing paused there is dropped: this one takes every page.
      this.pages.get(prefix)?.stop();
      listing = await this.listRemote(prefix);
      learn(this.cache.listing(prefix, Number.POSITIVE_INFINITY) ?? [], true);
    }
    const entries = new Map<string, DirEntry>();
    const dirs = new Set<string>();
    const deleting = this.vault.pendingDeletes > 0;
    for (const p of listing.prefixes) {
      if (deleting && this.vault.deletePending(p)) continue; // removed here (rmdir), its marker's delete not yet sent
      const segment = p.slice(prefix.length, -1);
      const name = segmentName(segment);
      if (name !== segment) this.oddKey(p, `not a valid file name: shown as ${name}`);
      const cached = this.cache.get(p.slice(0, -1));
      const stored = knownDirs.get(segment);
      const exact = (cached?.complete && cached.info?.kind === 'dir' ? cached.info : undefined) ?? (stored && this.metaOf(stored));
      const info = exact ?? decodeMeta('dir', 0, new Date(this.mountedAt), undefined, this.owner);
      entries.set(name, { name, info, exact: exact !== undefined || this.listingAttributes });
      dirs.add(segment);
      if (!cached) this.cache.remember(p.slice(0, -1), { info, complete: exact !== undefined });
    }
    // Directories made here whose marker is not uploaded yet (before the files: one of the same name is then shown
    // under an alias, as for a listed directory).
    const pending = this.vault.pendingUnder(prefix);
    for (const rec of pending) {
      const segment = rec.key.slice(prefix.length, -1);
      if (!rec.key.endsWith('/') || !segment || segment.includes('/')) continue;
      const name = segmentName(segment);
      entries.set(name, { name, info: recordInfo(rec, 'dir'), exact: true });
      dirs.add(segment);
    }
    const nameOfFile = (segment: string, key: string): string => {
      if (!dirs.has(segment)) {
        const name = segmentName(segment);
        if (name !== segment) this.oddKey(key, `not a valid file name: shown as ${name}`);
        return name;
      }
      const name = shadowedName(segment);
      this.oddKey(key, `a directory of the same name shadows it: shown as ${name}`);
      return name;
    };
    // Vault records of listed files: one range query for a large directory rather than one query per entry (10 000
    // of them were most of a warm `ls -l`). The range covers every cached file below the directory, not only its
    // children: cheaper unless the vault holds far more files under it than the listing has.
    let records: ((key: string) => FileRecord | undefined) | undefined;
    if (listing.objects.length >= BULK_RECORDS) {
      const byKey = new Map(this.vault.recordsUnder(prefix).map((r) => [r.key, r]));
      records = (key) => byKey.get(key);
    }
    // A listing longer than the metadata cache would only churn it: its entries stay known through the listing.
    const remember = listing.objects.length <= this.cache.capacity;
    for (let i = 0; i < listing.objects.length; i++) {
      const o = listing.objects[i]!;
      const segment = o.key.slice(prefix.length);
      if (!segment) continue; // the directory's own marker
      if (deleting && this.vault.deletePending(o.key)) continue; // removed here, its delete not yet sent
      // (A name shown under an alias, its stored name unlike its key's, is not taken as known.)
      const entry = storedFiles ? storedFiles[i] : known.get(segment);
      const stored = entry?.meta && entry.name === segment ? this.metaOf(entry) : undefined;
      const { info, exact } = stored && stored.size === o.size ? { info: stored, exact: true } : this.listedFileInfo(o, records, remember);
      const name = nameOfFile(segment, o.key);
      // A listing does not say which objects are symlinks; those never looked up show as regular files to readdir
      // (d_type) — stat tells the truth. Asking would cost a HEAD per entry and make find slow on large trees.
      entries.set(name, { name, info, exact });
    }
    // Open, changed and not-yet-uploaded files: what the vault has wins over what storage lists.
    for (const rec of pending) {
      const segment = rec.key.slice(prefix.length);
      if (!segment || segment.includes('/')) continue;
      const name = nameOfFile(segment, rec.key);
      entries.set(name, { name, info: recordInfo(rec), exact: true });
    }
    return [...entries.values()];
  }

  /** A listed entry's stored attributes, decoded once per entry the listing store hands out. */
  private metaOf(e: ListedEntry): FileInfo {
    if (e.decoded) return e.decoded as FileInfo;
    let info = this.decodedMeta.get(e);
    if (!info) this.decodedMeta.set(e, (info = JSON.parse(e.meta!) as FileInfo));
    return info;
  }

  /** A listing kept in the vault and still fresh, in the driver's shape. */
  private storedListing(prefix: string, maxAgeMs?: number): Listing | undefined {
    const stored = this.cache.listing(prefix, maxAgeMs);
    return stored && this.toListing(prefix, stored);
  }

  /** `files`: filled with the stored entry of each object, in the same order. */
  private toListing(prefix: string, stored: ListedEntry[], files?: ListedEntry[]): Listing {
    const listing: Listing = { objects: [], prefixes: [] };
    for (const e of stored) {
      if (e.kind === 'dir') listing.prefixes.push(`${prefix}${e.name}/`);
      else {
        files?.push(e);
        listing.objects.push({ key: prefix + (e.name.endsWith(SHADOWED_ENTRY) ? e.name.slice(0, -SHADOWED_ENTRY.length) : e.name), size: e.size, etag: e.etag, lastModified: new Date(e.modifiedMs) });
      }
    }
    return listing;
  }

  /**
   * ListObjectsV2 with delimiter, kept in the vault; offline, the vault's records stand in for it. With `max`,
   * a directory of more entries is not listed whole: undefined, nothing stored.
   */
  private async listRemote(prefix: string): Promise<Listing>;
  private async listRemote(prefix: string, max: number, onPage: NonNullable<ListOptions['onPage']>, watch: ListingWatch): Promise<Listing | undefined>;
  private async listRemote(prefix: string, max?: number, onPage?: ListOptions['onPage'], watching?: ListingWatch): Promise<Listing | undefined> {
    let listing: Listing;
    // Uploads and deletes that land while the LIST is in flight may be missing from its answer: they are kept.
    const watch = watching ?? this.cache.watchListing(prefix);
    try {
      listing = await this.storage.list(prefix, { delimiter: '/', maxKeys: max === undefined ? undefined : max + 1, onPage });
      if (listing.stopped || (max !== undefined && listing.objects.length + listing.prefixes.length > max)) {
        this.cache.unwatchListing(watch);
        return undefined;
      }
    } catch (err) {
      this.cache.unwatchListing(watch);
      if (max !== undefined) throw err;
      if (!(err instanceof StorageError) || !err.transient) throw err;
      // Offline: the last listing kept in the vault, however old, else the vault's records.
      const stale = this.storedListing(prefix, Number.POSITIVE_INFINITY);
      if (stale) return stale;
      // A directory the vault knows nothing of stays an error; one with records (its marker's, or files made or
      // moved there offline, added by the caller) is listed from them.
      listing = this.offlineListing(prefix);
      if (!listing.objects.length && !listing.prefixes.length && !this.vault.record(prefix) && !this.vault.pendingUnder(prefix).length) throw err;
      return listing;
    }
    const entries: ListedEntry[] = [];
    const dirs = new Set<string>();
    for (const p of listing.prefixes) {
      const name = p.slice(prefix.length, -1);
      dirs.add(name);
      entries.push({ name, kind: 'dir', size: 0, etag: '', modifiedMs: this.mountedAt });
    }
    for (const o of listing.objects) {
      const name = o.key.slice(prefix.length);
      if (name) entries.push({ name: dirs.has(name) ? name + SHADOWED_ENTRY : name, kind: 'file', size: o.size, etag: o.etag, modifiedMs: o.lastModified.getTime() });
    }
    this.cache.setListing(prefix, entries, watch);
    // Changes landed while it was asked for: the stored listing, which has them, is the answer.
    return watch.changes.size ? this.storedListing(prefix, Number.POSITIVE_INFINITY)! : listing;
  }

  private offlineListing(prefix: string): Listing {
    const objects: ObjectInfo[] = [];
    const prefixes = new Set<string>();
    for (const rec of this.vault.recordsUnder(prefix)) {
      const rest = rec.key.slice(prefix.length);
      const cut = rest.indexOf('/');
      if (cut >= 0) prefixes.add(prefix + rest.slice(0, cut + 1));
      else if (rec.remoteEtag !== null) objects.push({ key: rec.key, size: rec.size, etag: rec.remoteEtag, lastModified: new Date(rec.mtimeMs) });
    }
    return { objects, prefixes: [...prefixes] };
  }

  /** @param records the vault's records of the directory, when already loaded (else looked up one by one) */
  private listedFileInfo(o: ObjectInfo, records?: (key: string) => FileRecord | undefined, remember = true): { info: FileInfo; exact: boolean } {
    const cached = this.cache.get(o.key);
    if (cached?.info && cached.complete && cached.etag === o.etag) return { info: cached.info, exact: true };
    // A cached copy of this very version knows the POSIX attributes: no HEAD needed.
    const rec = records ? records(o.key) : this.vault.record(o.key);
    if (rec && !rec.dirty && rec.remoteEtag === o.etag) {
      const info: FileInfo = { ...recordInfo(rec), size: o.size };
      // Kept with the stored listing too: the next listing knows it without looking the record up.
      this.cache.set(o.key, { info, etag: o.etag, complete: true }, true);
      return { info, exact: true };
    }
    const info = decodeMeta('file', o.size, o.lastModified, undefined, this.owner);
    if (remember) this.cache.remember(o.key, { info, etag: o.etag, complete: false });
    return { info, exact: this.listingAttributes };
  }

  /** The remote version of a file as last seen, for opening it in the vault. */
  async remoteVersion(path: string, key: string): Promise<{ info: FileInfo; etag: string } | null> {
    if (isShadowedPath(path)) {
      const object = await this.storage.head(key);
      return object && { info: decodeMeta('file', object.size, object.lastModified, object.meta, this.owner), etag: object.etag };
    }
    let cached = this.cache.get(key);
    if (!cached?.complete) {
      await this.lookupRemote(key);
      cached = this.cache.get(key);
    }
    if (!cached?.info) return null;
    if (cached.info.kind === 'dir') throw new FsError(E.EISDIR, 'open', path);
    return { info: cached.info, etag: cached.etag! };
  }
}
