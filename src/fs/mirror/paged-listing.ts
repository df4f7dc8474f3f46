/**
 * A directory listing on its way, page by page, for the look-ups that wait on it. S3 lists keys in byte order and a
 * page covers everything up to its last key or common prefix, so a name the pages have gone past is decided: its
 * file, its directory (`name/`), or neither. A `stat` loop over the first thousand names of a 10 000-entry directory
 * is answered from the first page (0.2 s on s3rver) instead of after all ten (2 s).
 *
 * Pages are asked for only as look-ups need them: after each page the listing pauses until a look-up meets a name
 * the pages have not reached (that stat loop costs two pages, not ten, and the server's time for the other eight is
 * not taken from the walk). A paused listing is stopped once its first page is older than a listing may be.
 *
 * Only ASCII names are decided early: there UTF-8 byte order (S3's) and JavaScript's string order agree whatever the
 * other keys hold. Others need the whole listing, as does a name changed through the mount while the listing is
 * on its way (the stored listing replays such changes).
 */
import type { ListedEntry } from '../../cache/listings.js';
import type { Listing } from '../../storage/driver.js';

type Decided = ListedEntry | 'absent';

export class PagedListing {
  private readonly files = new Map<string, ListedEntry>();
  private readonly dirs = new Map<string, ListedEntry>();
  /** How far the pages reach, relative to the directory: the last key or common prefix received. */
  private through = '';
  private readonly waiting = new Map<string, ((d: Decided) => void)[]>();
  /** Listed files without attributes, in listing order (the siblings a walk prefetches), and their positions. */
  readonly fileNames: string[] = [];
  readonly fileIndex = new Map<string, number>();
  /** A look-up needs the whole listing: no pause. */
  private wantAll = false;
  /** A walk came near the end of the pages so far: one more without a pause. */
  private wantNext = false;
  /** Set while paused: called to go on (true) or stop (false). */
  private resume: ((go: boolean) => void) | undefined;
  private stopped = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly prefix: string,
    private readonly mountedAt: number,
    /** Whether a name changed through the mount since the listing began. */
    private readonly changed: (name: string) => boolean,
    /** How old its first page may grow while it is paused. */
    private readonly maxAgeMs: number,
    /** A look-up this close to the last file of the pages so far asks for the next page. */
    private readonly lead = 0,
  ) {}

  /** Whether it was stopped before its end (what it holds is not the directory's whole listing). */
  get isStopped(): boolean {
    return this.stopped;
  }

  /**
   * After each page (the storage driver's onPage): go on at once while a look-up waits for a name the pages have not
   * decided, else pause until one does. False: stopped (by stop(), or paused until its first page grew too old).
   */
  next(): boolean | Promise<boolean> {
    if (this.stopped) return false;
    if (this.wantAll || this.waiting.size || this.wantNext) {
      this.wantNext = false;
      return true;
    }
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => this.stop(), Math.max(0, this.startedAt + this.maxAgeMs - Date.now()));
      timer.unref();
      this.resume = (go) => {
        clearTimeout(timer);
        this.resume = undefined;
        this.wantNext = false;
        resolve(go);
      };
    });
  }

  /** No more pages: a paused listing ends now, one on its way after its current page. */
  stop(): void {
    this.stopped = true;
    this.resume?.(false);
  }

  /** A page of the listing arrived (keys and prefixes in the storage's terms, with the directory's prefix). */
  add(page: Listing): void {
    const cut = this.prefix.length;
    for (const p of page.prefixes) {
      const rel = p.slice(cut);
      const name = rel.slice(0, -1);
      this.dirs.set(name, { name, kind: 'dir', size: 0, etag: '', modifiedMs: this.mountedAt });
      if (rel > this.through) this.through = rel;
    }
    for (const o of page.objects) {
      const name = o.key.slice(cut);
      if (!name) continue; // the directory's own marker
      this.files.set(name, { name, kind: 'file', size: o.size, etag: o.etag, modifiedMs: o.lastModified.getTime() });
      if (!this.fileIndex.has(name)) {
        this.fileIndex.set(name, this.fileNames.length);
        this.fileNames.push(name);
      }
      if (name > this.through) this.through = name;
    }
    for (const [name, resolvers] of this.waiting) {
      const d = this.decide(name);
      if (d === undefined) continue;
      this.waiting.delete(name);
      for (const r of resolvers) r(d);
    }
  }

  /** What the pages so far say of `name`: its directory if there is one, else its file, else absent; undefined if undecided. */
  decide(name: string): Decided | undefined {
    // Past `name/`: every key under the directory and the file itself would have come (name < name/ < name/…).
    if (!isAscii(name) || this.through < `${name}/` || this.changed(name)) return undefined;
    return this.dirs.get(name) ?? this.files.get(name) ?? 'absent';
  }

  /**
   * Resolves once the pages decide `name`, asking for more of them if need be (never, if they do not: race it with
   * the listing's end).
   */
  decided(name: string): Promise<Decided> {
    const d = this.decide(name);
    if (d !== undefined) {
      // A walk in listing order near the last name so far: the next page comes while it goes on (its siblings'
      // HEADs are prefetched from the pages).
      const at = this.fileIndex.get(name);
      if (at !== undefined && at >= this.fileNames.length - this.lead) {
        this.wantNext = true;
        this.resume?.(true);
      }
      return Promise.resolve(d);
    }
    if (!isAscii(name) || (this.changed(name) && this.through >= `${name}/`)) {
      // Only the whole listing answers it.
      this.wantAll = true;
      this.resume?.(true);
      return new Promise<Decided>(() => undefined);
    }
    return new Promise<Decided>((resolve) => {
      const list = this.waiting.get(name);
      if (list) list.push(resolve);
      else this.waiting.set(name, [resolve]);
      this.resume?.(true);
    });
  }
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}
