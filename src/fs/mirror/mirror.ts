/**
 * The S3 mirror: CBFS event handlers implemented on the vault. Files are objects, directories are common
 * prefixes or `dir/` marker objects. File data goes through the vault: close (CleanupFile) makes a file's
 * changes durable there, and the vault's write-back queue uploads them after FlushAfterCloseDelay. Rename is
 * server-side copy + delete. See docs/SEMANTICS.md for each operation.
 */
import PQueue from 'p-queue';
import type { CachedFile, FileAttrs, FileRecord } from '../../cache/cached-file.js';
import type { Vault } from '../../cache/vault.js';
import { StorageError } from '../../storage/rwresult.js';
import type { Logger } from '../../log.js';
import type { AttributeChange, Caller, CbfsHandlers, ChangeNotifier, DirEntry, FileInfo } from '../cbfs/events.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, RENAME_EXCHANGE, RENAME_NOREPLACE, SEEK_DATA, SEEK_HOLE } from '../cbfs/events.js';
import { resetTimeout } from '../cbfs/dispatcher.js';
import { E, FsError, toFsError } from '../errors.js';
import { checkNewName, dirPrefix, isShadowedPath, NAME_MAX, pathToKey } from './keys.js';
import { decodeXattrs, DIR_CONTENT_TYPE, encodeMeta, encodeXattrs, metaBytes, S_IFLNK, S_IFMT, USER_META_MAX, type Owner } from './meta.js';
import { LocalNames } from './local-names.js';
import { ETAG_XATTR, parseTagName, tagName } from './xattr-names.js';
import { MetadataCache } from './metadata-cache.js';
import { ENUM_MODE, FLUSH } from '../../cache/constants.js';
import { DELETE_BATCH } from '../../cache/delete-queue.js';
import { Namespace, recordInfo } from './namespace.js';
import { parseVersionsPath, VersionsView } from './versions-view.js';
import { MoveGate, Moved, type Change } from './move-gate.js';

export interface MirrorOptions {
  vault: Vault;
  log: Logger;
  owner: Owner;
  metadataTtlMs?: number;
  metadataCacheSize?: number;
  /** How long a directory listing kept in the vault is used without asking storage again. */
  listingTtlMs?: number;
  /** Files known only from a listing are shown with its attributes, no HEAD each (fs.listingAttributes). */
  listingAttributes?: boolean;
  capacityBytes?: number;
  readOnly?: boolean;
  /** Name patterns of local files (R44), default DEFAULT_LOCAL_PATTERNS. */
  localPatterns?: string[];
  /** 'vault' (default): fsync makes data durable in the vault; 'remote': fsync also waits for the upload. */
  syncMode?: 'vault' | 'remote';
  /** The longest new name the storage takes, in bytes (default and at most NAME_MAX, 255); statfs reports it. */
  nameMax?: number;
}

interface Handle {
  file: CachedFile;
  path: string;
  /** Opened with O_SYNC/O_DSYNC: writes are durable when they return, close waits for the upload. */
  writeThrough: boolean;
  /** Served by FUSE passthrough: 'read', or 'write' when the kernel may change the data file behind the vault. */
  passthrough?: 'read' | 'write';
}

const O_DSYNC = 0o10000;
const MAX_OBJECT = 5 * 1024 ** 4;

/** Whether `next` keeps every attribute of `info` that an object's metadata holds: then there is nothing to write. */
function sameAttributes(info: FileInfo, next: FileInfo): boolean {
  return info.mode === next.mode && info.uid === next.uid && info.gid === next.gid && info.mtimeMs === next.mtimeMs && (info.xattrs ?? null) === (next.xattrs ?? null);
}

/**
 * Server-side copies of a directory move at once. One at a time, each waited its round trip and the server's file
 * I/O: `mv` of a 1000-file directory took 5.4 s against s3rver (2.9-3.4 s with 16).
 */
const MOVE_CONCURRENCY = 16;
/** A directory move whose requests fail transiently runs again this many times in all, after 0.5 s, then 1 s. */
const MOVE_ATTEMPTS = 3;
const MOVE_RETRY_MS = 500;
const ZEROS = Buffer.alloc(1024 * 1024);
const O_SYNC = 0o4010000;

export class S3Mirror implements CbfsHandlers {
  private readonly vault: Vault;
  private readonly log: Logger;
  private readonly owner: Owner;
  private readonly cache: MetadataCache;
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;
  private readonly mountedAt = Date.now();
  private readonly localNames: LocalNames;
  private readonly ns: Namespace;
  private notifier: ChangeNotifier | undefined;
  /** Symlink targets by key, with the ETag of the object they came from. */
  private readonly links = new Map<string, { etag: string; target: string }>();
  /** The read-only `.s3vault-versions` directories. */
  readonly versions: VersionsView;
  /** Changes beside directory moves: they wait for each other (move-gate.ts). */
  private readonly gate = new MoveGate();

  constructor(private readonly options: MirrorOptions) {
    this.vault = options.vault;
    this.log = options.log;
    this.owner = options.owner;
    this.cache = new MetadataCache(options.metadataTtlMs ?? 5000, options.metadataCacheSize ?? 2048, this.vault.listings, options.listingTtlMs ?? 60_000);
    this.localNames = new LocalNames(options.localPatterns);
    this.ns = new Namespace(this.vault, this.cache, this.owner, this.mountedAt, (key, rule) => this.log.warn({ key }, `odd key: ${rule}`));
    this.ns.listingAttributes = options.listingAttributes ?? false;
    this.versions = new VersionsView(this.vault.storage, this.owner, this.mountedAt);
    this.vault.onUploaded = (rec) => {
      // A directory's marker (`dir/`): the directory is what its parent's listing learns.
      if (rec.key.endsWith('/')) this.cache.set(rec.key.slice(0, -1), { info: recordInfo(rec, 'dir'), complete: true });
      else this.cache.set(rec.key, { info: recordInfo(rec), etag: rec.remoteEtag!, complete: true });
    };
    this.vault.onConflict = (c) => {
      // The name now shows the other writer's object, which no stored listing knows yet: list it again.
      this.cache.delete(c.key);
      this.vault.listings.drop(c.key.slice(0, c.key.lastIndexOf('/') + 1));
      const rec = c.conflictKey ? this.vault.record(c.conflictKey) : undefined;
      if (rec) this.cache.set(rec.key, { info: recordInfo(rec), etag: rec.remoteEtag!, complete: true });
    };
  }

  private get storage() {
    return this.vault.storage;
  }

  private async run<T>(op: string, path: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof Moved) throw err; // for the move gate, which runs the change again
      throw toFsError(err, op, path);
    }
  }

  private writable(op: string, path: string): void {
    if (this.options.readOnly || parseVersionsPath(path)) throw new FsError(E.EROFS, op, path);
  }

  private handle(h: number, op: string): Handle {
    const found = this.handles.get(h);
    if (!found) throw new FsError(E.EBADF, op, `handle ${h}`);
    return found;
  }

  private addHandle(file: CachedFile, path: string, flags = 0): number {
    const h = this.nextHandle++;
    this.handles.set(h, { file, path, writeThrough: (flags & O_SYNC) === O_SYNC || (flags & O_DSYNC) !== 0 });
    return h;
  }

  private fileInfoOf(file: CachedFile): FileInfo {
    return recordInfo(file.rec);
  }

  setNotifier(notifier: ChangeNotifier): void {
    this.notifier = notifier;
  }

  /**
   * `s3vault refresh <path>`: forget what the mount knows of a path and everything under it (metadata, stored
   * listings, the kernel's caches), so the next access asks storage. Cached file data is kept; it is checked
   * against the object's ETag at the next open.
   */
  async refresh(path: string): Promise<void> {
    this.cache.forgetUnder(path === '/' ? '' : pathToKey(path));
    this.links.clear();
    await this.notifier?.invalidate(path);
  }


  // ---- lifecycle ----

  async mount(): Promise<void> {
    await this.finishInterruptedRenames();
    // Orphans (R45): files changed and closed in an earlier run but never uploaded. The vault queued them.
    if (this.vault.orphans.length) this.log.warn({ count: this.vault.orphans.length }, 'orphan files from an earlier run are being uploaded');
  }

  /** Unmount: every pending change is uploaded first (FLUSH_IMMEDIATE), with progress in the log. */
  async unmount(): Promise<void> {
    if (this.options.readOnly) return; // nothing may be uploaded
    const pending = this.vault.enumerateCachedFiles(ENUM_MODE.CHANGED).length;
    if (!pending) return;
    this.log.info({ files: pending }, 'uploading pending changes before unmounting');
    const r = await this.vault.flushAll((done, total, key) => this.log.info({ done, total, key }, 'flush progress'));
    if (r.left) this.log.warn({ left: r.left }, 'storage unreachable: changes left in the vault; they upload at the next mount');
  }

  // ---- lookups (namespace.ts) ----

  async getFileInfo(path: string): Promise<FileInfo | null> {
    const vp = parseVersionsPath(path);
    if (vp) return this.run('getattr', path, () => this.versions.info(vp));
    return this.run('getattr', path, () => this.ns.getFileInfo(path));
  }

  /** The data version an open file shows: the object's ETag, or the vault record for a file never uploaded. */
  cacheToken(handle: number): string | undefined {
    const rec = this.handles.get(handle)?.file.rec;
    return rec && (rec.remoteEtag ?? `vault:${rec.id}`);
  }

  openFileInfo(path: string): FileInfo | undefined {
    if (parseVersionsPath(path)) return undefined;
    const rec = this.vault.openRecord(pathToKey(path));
    return rec && recordInfo(rec);
  }

  async getHandleInfo(handle: number): Promise<FileInfo> {
    const h = this.handle(handle, 'getattr');
    this.adoptPassthroughWrites(handle);
    return this.fileInfoOf(h.file);
  }

  /**
   * FUSE passthrough: the data file that can serve this handle's reads (and writes) without the vault. Only when
   * every block is in the vault — unless `force` (the inode already has passthrough handles, and the kernel wants
   * every handle of it served the same way).
   */
  passthroughFd(handle: number, force: boolean): number | undefined {
    if (this.versions.owns(handle)) return undefined;
    const h = this.handles.get(handle);
    if (!h) return undefined;
    if (force) return h.file.dataFd;
    // O_SYNC/O_DSYNC writes must be journaled as they happen, which only a write through the vault does.
    return h.writeThrough ? undefined : h.file.completeDataFd();
  }

  passthroughOpened(handle: number, writable: boolean): void {
    const h = this.handles.get(handle);
    if (!h) return;
    h.passthrough = writable ? 'write' : 'read';
    h.file.passthroughOpens++;
    if (writable) {
      h.file.watchExternalWrites();
      h.file.passthroughWriters++;
    }
  }

  /** What the kernel may have written through a passthrough handle becomes the vault's (size, changed data). */
  adoptPassthroughWrites(handle: number): void {
    const h = this.handles.get(handle);
    // A removed file too: its handles still see (fstat) what they wrote.
    if (h?.passthrough === 'write') h.file.adoptExternalWrites();
  }

  async enumerateDirectory(path: string): Promise<DirEntry[]> {
    const vp = parseVersionsPath(path);
    if (vp) return this.run('readdir', path, () => this.versions.enumerate(vp));
    return this.run('readdir', path, () => this.ns.enumerateDirectory(path));
  }

  // ---- files ----

  async openFile(path: string, flags: number): Promise<number> {
    const writing = (flags & 3) !== 0 || (flags & 0o1000) !== 0; // O_WRONLY|O_RDWR, O_TRUNC
    if (writing) this.writable('open', path);
    // Read-only opens too: one that ran beside a move of its directory found the file's record gone (moved) and
    // made a new one at the old name, whose reads then asked storage for an object the move had deleted (EIO).
    return this.gate.change([path], false, ([p]) => this.open(p, flags));
  }

  private async open(path: string, flags: number): Promise<number> {
    const vp = parseVersionsPath(path);
    if (vp) {
      const h = this.nextHandle++;
      await this.run('open', path, () => this.versions.open(vp, h));
      return h;
    }
    return this.run('open', path, async () => {
      const key = pathToKey(path);
      let file: CachedFile;
      const rec = this.vault.record(key);
      // The kernel follows links itself and never opens one: the file it meant lost this name to a link meanwhile.
      // (A handle on the link's record once made getattr call the kernel's file inode a link: EIO ever after.)
      if (rec && (rec.mode & S_IFMT) === S_IFLNK) throw new FsError(E.ENOENT, 'open', path, 'a symbolic link has this name now');
      if (this.vault.isOpen(key) || (rec && (rec.dirty || rec.remoteEtag === null))) {
        file = await this.vault.openFile(key, rec?.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null, rec!);
      } else {
        let remote: Awaited<ReturnType<Namespace['remoteVersion']>>;
        try {
          remote = await this.ns.remoteVersion(path, key);
        } catch (err) {
          // Offline: a cached copy opens as the version it is.
          if (!(err instanceof StorageError) || !err.transient || !rec?.remoteEtag) throw err;
          remote = { info: { kind: 'file', size: rec.size, mode: rec.mode, uid: rec.uid, gid: rec.gid, mtimeMs: rec.mtimeMs }, etag: rec.remoteEtag };
          this.log.debug({ key }, 'storage unreachable: opening the cached copy');
        }
        if (!remote || remote.info.kind === 'symlink') throw new FsError(E.ENOENT, 'open', path, remote ? 'a symbolic link has this name now' : undefined);
        file = await this.vault.openFile(key, { etag: remote.etag, size: remote.info.size }, remote.info);
      }
      if (flags & 0o1000) await file.setSize(0);
      return this.addHandle(file, path, flags);
    });
  }

  /**
   * A name is made only in a directory that exists. A request the kernel sent for a directory that moved or went
   * away meanwhile (its path resolved before the move ended, served after it) names the old path: it fails with
   * ENOENT, as if it had come after the move, instead of making a directory no listing shows here and S3 shows to
   * everyone else.
   */
  private async inDirectory(path: string, op: string): Promise<void> {
    const parent = path.slice(0, path.lastIndexOf('/'));
    if (parent === '') return;
    const info = await this.getFileInfo(parent);
    if (!info) throw new FsError(E.ENOENT, op, path, 'its directory no longer exists');
    if (info.kind !== 'dir') throw new FsError(E.ENOTDIR, op, path);
  }

  async createFile(path: string, mode: number, flags: number, caller: Caller): Promise<{ handle: number; info: FileInfo }> {
    this.writable('create', path);
    checkNewName(path, 'create', this.nameMax);
    return this.gate.change([path], true, ([path]) => this.run('create', path, async () => {
      const key = pathToKey(path);
      const attrs: FileAttrs = { mode: mode & 0o7777, uid: caller.uid, gid: caller.gid, mtimeMs: Date.now() };
      const existing = await this.getFileInfo(path);
      if (!existing) await this.inDirectory(path, 'create');
      if (existing && flags & 0o200) throw new FsError(E.EEXIST, 'create', path); // O_EXCL
      if (existing?.kind === 'dir') throw new FsError(E.EISDIR, 'create', path);
      if (existing?.kind === 'symlink') throw new FsError(E.EEXIST, 'create', path);
      const file = existing
        ? await this.vault.openFile(key, await this.remoteBase(path, key), attrs)
        : await this.vault.openFile(key, null, attrs, { local: this.localNames.matches(path) });
      if (existing) await file.setSize(0);
      this.cache.delete(key);
      return { handle: this.addHandle(file, path, flags), info: this.fileInfoOf(file) };
    }));
  }

  private async remoteBase(path: string, key: string): Promise<{ etag: string; size: number } | null> {
    const rec = this.vault.record(key);
    if (rec && (rec.dirty || rec.remoteEtag === null || this.vault.isOpen(key))) return rec.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null;
    const remote = await this.ns.remoteVersion(path, key);
    return remote && { etag: remote.etag, size: remote.info.size };
  }

  async readFile(handle: number, offset: number, length: number): Promise<Buffer> {
    if (this.versions.owns(handle)) return this.run('read', `handle ${handle}`, () => this.versions.read(handle, offset, length));
    const h = this.handle(handle, 'read');
    return this.run('read', h.path, () => h.file.read(offset, length));
  }

  async readFileInto(handle: number, offset: number, length: number, send: (fd: number, offset: number, length: number) => Promise<void>): Promise<boolean> {
    if (this.versions.owns(handle)) return false;
    const h = this.handle(handle, 'read');
    await this.run('read', h.path, () => h.file.readInto(offset, length, send));
    return true;
  }

  async writeFile(handle: number, offset: number, data: Buffer): Promise<number> {
    const h = this.handle(handle, 'write');
    this.writable('write', h.path);
    if (offset + data.length > MAX_OBJECT) throw new FsError(E.EFBIG, 'write', h.path, 'S3 objects are limited to 5 TiB');
    return this.run('write', h.path, async () => {
      const n = await h.file.write(offset, data);
      if (h.writeThrough) await h.file.commit();
      return n;
    });
  }

  /** CleanupFile (every close(2)): the file's changes become durable in the vault before close returns. */
  async cleanupFile(handle: number): Promise<void> {
    if (this.versions.owns(handle)) return;
    const h = this.handle(handle, 'flush');
    this.adoptPassthroughWrites(handle);
    await this.run('flush', h.path, async () => {
      if (!h.file.dirty || h.file.unlinked) return;
      // close(2): safe from a crash of s3vault at once; on disk at the next fsync or checkpoint (like a local disk).
      await h.file.commit(h.writeThrough);
      if (h.writeThrough) await this.upload(h.file);
    });
  }

  /** Upload now, through the vault's conflict policy, and learn the new version. */
  private async upload(file: CachedFile): Promise<void> {
    if ((await this.vault.uploadFile(file)) !== 'nothing') {
      this.cache.set(file.key, { info: this.fileInfoOf(file), etag: file.rec.remoteEtag!, complete: true });
      this.log.debug({ key: file.key, size: file.size }, 'uploaded');
    }
  }

  /** CloseFile: the last handle gone, a changed file joins the write-back queue (FLUSH_DELAYED). */
  async closeFile(handle: number): Promise<void> {
    if (this.versions.owns(handle)) return this.versions.close(handle);
    const h = this.handle(handle, 'release');
    if (h.passthrough === 'write' && !h.file.unlinked) {
      // Writes through a shared mapping can land after the last flush: take them in and journal them now.
      h.file.adoptExternalWrites();
      await this.run('release', h.path, () => h.file.commit(false));
    }
    this.handles.delete(handle);
    if (h.passthrough) {
      h.file.passthroughOpens--;
      if (h.passthrough === 'write') h.file.passthroughWriters--;
    }
    await this.run('release', h.path, () => this.vault.closeFile(h.file, { flush: FLUSH.DELAYED }));
  }

  /** FlushFile (fsync): durable in the vault; with syncMode 'remote', in storage too. */
  async flushFile(handle: number): Promise<void> {
    const h = this.handle(handle, 'fsync');
    this.adoptPassthroughWrites(handle);
    await this.run('fsync', h.path, async () => {
      await h.file.commit();
      if (this.options.syncMode === 'remote' && h.file.dirty && !h.file.rec.local) await this.vault.flushFile(h.file.key);
    });
  }

  async setFileAttributes(path: string, change: AttributeChange, handle?: number): Promise<FileInfo> {
    this.writable('setattr', path);
    if (change.size !== undefined && change.size > MAX_OBJECT) throw new FsError(E.EFBIG, 'setattr', path, 'S3 objects are limited to 5 TiB');
    return this.gate.change([path], false, ([path]) => this.run('setattr', path, async () => {
      const opened = handle !== undefined ? this.handles.get(handle)?.file : undefined;
      // An open file answers for itself: it may have no name any more (ftruncate/fchmod after unlink).
      const info = opened ? this.fileInfoOf(opened) : await this.getFileInfo(path);
      if (!info) throw new FsError(E.ENOENT, 'setattr', path);
      const key = pathToKey(path);
      if (info.kind === 'dir') return this.setDirAttributes(path, info, change);
      const attrs: Partial<FileAttrs> = {};
      if (change.mode !== undefined) attrs.mode = change.mode & 0o7777;
      if (change.uid !== undefined) attrs.uid = change.uid;
      if (change.gid !== undefined) attrs.gid = change.gid;
      if (change.mtimeMs !== undefined) attrs.mtimeMs = change.mtimeMs;
      if (change.xattrs !== undefined) attrs.xattrs = change.xattrs;
      if (info.kind === 'symlink' && change.size !== undefined) throw new FsError(E.EINVAL, 'setattr', path);
      // A symlink's mode is always 0777 (Linux cannot change it); its record's mode keeps the S_IFLNK it carries.
      if (info.kind === 'symlink') delete attrs.mode;
      const open = handle !== undefined ? this.handles.get(handle)?.file : undefined;
      const file = open ?? (info.kind === 'symlink' ? await this.openPendingLink(key) : this.vault.isOpen(key) || change.size !== undefined || this.vault.record(key)?.dirty ? await this.openForChange(path, key) : undefined);
      if (file) {
        try {
          if (change.size !== undefined) await file.setSize(change.size);
          if (Object.keys(attrs).length) file.setAttrs(attrs);
          // A size change is journaled now; attributes alone are saved when the file closes just below.
          if (!open && change.size !== undefined) await file.commit(false);
          return this.fileInfoOf(file);
        } finally {
          // Opened here for the change: closing it queues the upload like any other close.
          if (!open) await this.vault.closeFile(file, { flush: FLUSH.DELAYED });
        }
      }
      // Metadata only, data unchanged in storage: copy the object onto itself with new metadata.
      const next: FileInfo = { ...info, ...attrs };
      if (sameAttributes(info, next)) return next;
      // No upload of the file starts during the copy (opened, written and closed meanwhile, it would land first and
      // be copied over with the old metadata, or after and drop the new).
      const letGo = this.vault.holdUploads(key);
      try {
        const copied = this.vault.record(key)?.remoteEtag ?? this.cache.get(key)?.etag;
        const { etag } = await this.storage.copy(key, key, encodeMeta(info.kind, next));
        // Written meanwhile, the file takes the new attributes and is based on the copy (its ETag differs when the
        // object was a multipart upload): its upload carries both, and meets no conflict.
        this.vault.rebase(key, etag, attrs, copied);
        this.cache.set(key, { info: next, etag, complete: true });
      } catch (err) {
        if (!(err instanceof StorageError && err.transient)) throw err;
        return await this.journalAttributes(key, info, attrs, err);
      } finally {
        letGo();
      }
      return next;
    }));
  }

  /**
   * chmod/chown/touch of a closed file without storage (offline, or the copy failing after its retries): the change
   * goes on the file's record, and its upload, once storage is back, copies the object onto itself with it (no
   * data moves). Only for a file whose attributes are all known (a record, or a look-up's answer): a listing's
   * defaults would overwrite the object's own metadata. Otherwise the failure stands.
   */
  private async journalAttributes(key: string, info: FileInfo, attrs: Partial<FileAttrs>, err: unknown): Promise<FileInfo> {
    const rec = this.vault.record(key);
    const cached = this.cache.get(key);
    const etag = rec?.remoteEtag ?? (cached?.complete ? cached.etag : undefined);
    // A symlink without a record stays EIO: a record made from its attributes would lose its S_IFLNK.
    if (!etag || (!rec && info.kind !== 'file')) throw err;
    const file = await this.vault.openFile(key, { etag, size: rec?.size ?? info.size }, rec ?? info);
    try {
      file.setAttrs(attrs);
      return this.fileInfoOf(file);
    } finally {
      await this.vault.closeFile(file, { flush: FLUSH.DELAYED });
    }
  }

  /** A symlink made here whose upload is still to come: its record takes attribute changes (lchown, touch -h). */
  private async openPendingLink(key: string): Promise<CachedFile | undefined> {
    const rec = this.vault.record(key);
    if (!rec || !(rec.dirty || rec.remoteEtag === null)) return undefined;
    return this.vault.openFile(key, rec.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null, rec);
  }

  private async openForChange(path: string, key: string): Promise<CachedFile> {
    const rec = this.vault.record(key);
    const base = await this.remoteBase(path, key);
    return this.vault.openFile(key, base, rec ?? (await this.getFileInfo(path))!);
  }

  private async setDirAttributes(path: string, info: FileInfo, change: AttributeChange): Promise<FileInfo> {
    const next: FileInfo = { ...info };
    if (change.mode !== undefined) next.mode = change.mode & 0o7777;
    if (change.uid !== undefined) next.uid = change.uid;
    if (change.gid !== undefined) next.gid = change.gid;
    if (change.mtimeMs !== undefined) next.mtimeMs = change.mtimeMs;
    if (change.xattrs !== undefined) next.xattrs = change.xattrs;
    if (path === '/') {
      if (change.xattrs !== undefined) throw new FsError(E.ENOTSUP, 'setxattr', path, 'the root has no object to hold attributes');
      return next; // the root has no marker object to hold attributes
    }
    // tar x and cp -a set owner, mode and times on every directory they make, mostly to what mkdir already gave.
    if (sameAttributes(info, next)) return next;
    await this.putMarker(path, next);
    return next;
  }

  /**
   * A directory's attributes go to its marker: with its upload if that is still to come, else rewritten now.
   * `journal`: without storage, journaled instead (a directory move must not go on as if its marker were written).
   */
  private async putMarker(path: string, info: FileInfo, journal = true): Promise<void> {
    const key = dirPrefix(path);
    const attrs = { mode: info.mode, uid: info.uid, gid: info.gid, mtimeMs: info.mtimeMs, xattrs: info.xattrs ?? null };
    const pending = this.ns.pendingMarker(pathToKey(path));
    let rec = pending;
    if (!pending) {
      try {
        const { etag } = await this.storage.write(key, 0, async () => Buffer.alloc(0), { meta: encodeMeta('dir', info), contentType: DIR_CONTENT_TYPE });
        // The marker's record, kept since its upload, takes the new attributes: offline look-ups and directory
        // moves read it (before, it kept the old mode, which came back offline).
        this.vault.rebase(key, etag, attrs);
        this.cache.set(pathToKey(path), { info, complete: true });
        return;
      } catch (err) {
        // Without storage, a directory whose attributes are all known (its marker's record, or a look-up's answer:
        // a listing's defaults would overwrite the marker's own) is journaled below, as mkdir's marker is (a marker
        // holds attributes only: its upload overwrites, never a conflict).
        rec = this.vault.record(key);
        if (!journal || !(err instanceof StorageError && err.transient) || !(rec || this.cache.get(pathToKey(path))?.complete)) throw err;
      }
    }
    // The marker's record takes the attributes, and its upload carries them.
    const file = await this.vault.openFile(key, rec?.remoteEtag ? { etag: rec.remoteEtag, size: 0 } : null, rec ?? info);
    try {
      file.setAttrs(attrs);
    } finally {
      await this.vault.closeFile(file, { flush: FLUSH.DELAYED });
    }
    this.cache.set(pathToKey(path), { info, complete: true });
  }

  // ---- namespace changes ----

  async createDirectory(path: string, mode: number, caller: Caller): Promise<FileInfo> {
    this.writable('mkdir', path);
    checkNewName(path, 'mkdir', this.nameMax);
    return this.gate.change([path], true, ([path]) => this.run('mkdir', path, async () => {
      if (await this.getFileInfo(path)) throw new FsError(E.EEXIST, 'mkdir', path);
      await this.inDirectory(path, 'mkdir');
      // A file removed just before: its delete goes first, so that it cannot hide the directory. Without storage,
      // the marker's upload sends it first (before, mkdir failed with EIO offline).
      await this.vault.sendDeletes(pathToKey(path)).catch((err: unknown) => {
        if (!(err instanceof StorageError && err.transient)) throw err;
      });
      const info: FileInfo = { kind: 'dir', size: 0, mode: mode & 0o7777, uid: caller.uid, gid: caller.gid, mtimeMs: Date.now() };
      // Its marker is journaled in the vault and uploaded by the write-back queue, like a new empty file: mkdir
      // waits for no request (tar x and git clone make a directory every few files), and works offline.
      const marker = await this.vault.openFile(dirPrefix(path), null, { mode: info.mode, uid: info.uid, gid: info.gid, mtimeMs: info.mtimeMs });
      await this.vault.closeFile(marker, { flush: FLUSH.DELAYED });
      this.cache.set(pathToKey(path), { info, complete: true });
      // It did not exist, so nothing is under it: lookups inside the new directory need no request.
      this.cache.setListing(dirPrefix(path), []);
      return info;
    }));
  }

  async deleteFile(path: string): Promise<void> {
    this.writable('unlink', path);
    return this.gate.change([path], true, ([path]) => this.run('unlink', path, async () => {
      const info = await this.getFileInfo(path);
      if (!info) throw new FsError(E.ENOENT, 'unlink', path);
      if (info.kind === 'dir') throw new FsError(E.EISDIR, 'unlink', path);
      const key = pathToKey(path);
      if (isShadowedPath(path)) {
        // Its key is also the look-up key of the directory that shadows it: a journaled delete would hide that.
        const rec = await this.releaseName(key, path);
        if (!rec || rec.remoteEtag !== null) await this.storage.delete(key);
      } else {
        // The object's delete is journaled with the record's removal and sent later, batched (rm -r: one request
        // per 1000 files, not one each); until then the namespace hides the name.
        await this.releaseName(key, path, true);
      }
      this.forgetName(path, key);
    }));
  }

  /**
   * A file's name goes away (unlink, or replaced by a rename): an upload in flight finishes first (it must not
   * recreate the object after the delete), and a file still open keeps working for its handles — every byte it
   * still needs from storage comes into the vault before the object is deleted. Returns the record it had.
   * `deleteObject`: the object (if storage has one of ours) is deleted too, journaled with the record's removal.
   */
  private async releaseName(key: string, path: string, deleteObject = false) {
    // No upload of the name starts meanwhile (asked for while an open file's blocks come in): its PUT would race
    // the delete.
    const letGo = this.vault.holdUploads(key);
    try {
      await this.vault.settled(key);
      const rec = this.vault.record(key);
      if (rec && this.vault.isOpen(key) && rec.remoteEtag !== null) {
        const file = await this.vault.openFile(key, { etag: rec.remoteEtag, size: rec.size }, rec);
        try {
          await file.fetchAll(() => resetTimeout(path));
        } finally {
          await this.vault.closeFile(file, { flush: FLUSH.NONE });
        }
      }
      // Never uploaded, as far as the vault knows, unless an upload's answer was lost: it may have landed.
      const hasObject = !rec || rec.remoteEtag !== null || this.vault.uploadOutcomeUnknown(key);
      this.vault.removeRecord(key, { deleteObject: deleteObject && hasObject });
      this.links.delete(key);
      return rec;
    } finally {
      letGo();
    }
  }

  /**
   * Delete the object of a name that went away (rename): journaled and sent batched, but at once for a file that a
   * directory of the same name shadows — its key is also the directory's look-up key, which a journaled delete hides.
   */
  private async deleteObjectOf(path: string, key: string): Promise<void> {
    if (isShadowedPath(path)) await this.storage.delete(key);
    else this.vault.deleteObject(key);
  }

  /** After a name is gone: "does not exist" in the caches — except for a shadowed file, whose key the directory shares. */
  private forgetName(path: string, key: string): void {
    if (isShadowedPath(path)) {
      this.cache.delete(key);
      this.vault.listings.drop(key.slice(0, key.lastIndexOf('/') + 1));
    } else {
      this.cache.set(key, { info: null, complete: true });
    }
  }

  async deleteDirectory(path: string): Promise<void> {
    this.writable('rmdir', path);
    return this.gate.change([path], true, ([path]) => this.run('rmdir', path, async () => {
      const prefix = dirPrefix(path);
      if (!(await this.isDirectoryEmpty(prefix))) throw new FsError(E.ENOTEMPTY, 'rmdir', path);
      // The marker's delete is journaled like a file's and goes in the same batches (rm -r of a tree: no request per
      // directory for it); until then the namespace hides the directory. A marker never uploaded leaves the vault
      // only: storage has nothing to delete.
      await this.releaseName(prefix, path, true);
      this.cache.set(pathToKey(path), { info: null, complete: true });
    }));
  }

  /** IsDirectoryEmpty: nothing under the prefix but its own marker, in storage or in the vault. */
  private async isDirectoryEmpty(prefix: string): Promise<boolean> {
    // Files and directories removed here whose deletes are journaled are still in storage: the listing passes over
    // them (rm -r sends no batch per directory). Past a batch of them under it, they go first: a shorter listing.
    if (this.vault.deletesUnder(prefix).length > DELETE_BATCH) await this.vault.sendDeletes();
    // Two keys: its marker and one other, if there is one.
    // Offline, what the vault knows of the directory answers (rmdir of one made, or listed, before): as elsewhere
    // offline, names it does not know look absent.
    if ((await this.ns.liveKeys(prefix, 2, true)).some((o) => o.key !== prefix)) return false;
    return !this.vault.pendingUnder(prefix).some((r) => r.key !== prefix && (r.remoteEtag === null || this.vault.isOpen(r.key)));
  }

  async renameOrMoveFile(from: string, to: string, flags: number): Promise<void> {
    this.writable('rename', from);
    this.writable('rename', to);
    checkNewName(to, 'rename', this.nameMax);
    return this.gate.change([from, to], true, ([from, to], self) => this.run('rename', from, async () => {
      const src = await this.getFileInfo(from);
      if (!src) throw new FsError(E.ENOENT, 'rename', from);
      const dst = await this.getFileInfo(to);
      if (!dst) await this.inDirectory(to, 'rename');
      if (flags & RENAME_EXCHANGE) return this.exchange(from, src, to, dst, self);
      if (dst && flags & RENAME_NOREPLACE) throw new FsError(E.EEXIST, 'rename', to);
      await this.move(from, src, to, dst, self);
    }));
  }

  private async move(from: string, src: FileInfo, to: string, dst: FileInfo | null, self: Change): Promise<void> {
    if (src.kind !== 'dir') {
      if (dst?.kind === 'dir') throw new FsError(E.EISDIR, 'rename', to);
      await this.renameFile(from, to, src, dst !== null);
    } else {
      if (dst && dst.kind !== 'dir') throw new FsError(E.ENOTDIR, 'rename', to);
      if (dst && !(await this.isDirectoryEmpty(dirPrefix(to)))) throw new FsError(E.ENOTEMPTY, 'rename', to);
      if (dirPrefix(to).startsWith(dirPrefix(from))) throw new FsError(E.EINVAL, 'rename', from, 'cannot move a directory into itself');
      await this.renameDirectory(from, to, self, dst !== null);
    }
  }

  /**
   * RENAME_EXCHANGE: S3 has no atomic swap, so it is three moves through a hidden name in the source's directory
   * (`.s3vault~xchg~…`). A crash in the middle leaves that name visible, never a lost file.
   */
  private async exchange(a: string, infoA: FileInfo, b: string, infoB: FileInfo | null, self: Change): Promise<void> {
    if (!infoB) throw new FsError(E.ENOENT, 'rename', b);
    if (a === b) return;
    if (dirPrefix(b).startsWith(dirPrefix(a)) || dirPrefix(a).startsWith(dirPrefix(b))) throw new FsError(E.EINVAL, 'rename', a, 'cannot exchange a directory with something inside it');
    const tmp = `${a.slice(0, a.lastIndexOf('/'))}/.s3vault~xchg~${process.pid}-${Date.now()}`;
    await this.move(a, infoA, tmp, null, self);
    await this.move(b, infoB, a, null, self);
    await this.move(tmp, infoA, b, null, self);
  }

  private async renameFile(from: string, to: string, src: FileInfo, dstExists = false): Promise<void> {
    const fromKey = pathToKey(from);
    const toKey = pathToKey(to);
    // No upload of either name starts until the rename is done (one in flight is waited for below). One started
    // meanwhile, by a close during the copy or the fetch, landed the file under the name it was leaving: that object
    // was then deleted or left behind, and the record, moved on, took it for its base.
    const letGo = [this.vault.holdUploads(fromKey), this.vault.holdUploads(toKey)];
    try {
      await this.moveFile(from, to, src, dstExists);
    } finally {
      for (const release of letGo) release();
    }
  }

  private async moveFile(from: string, to: string, src: FileInfo, dstExists: boolean): Promise<void> {
    const fromKey = pathToKey(from);
    const toKey = pathToKey(to);
    // What had the target name goes away; a handle open on it keeps reading and writing the replaced file.
    if (dstExists && this.vault.record(toKey)) await this.releaseName(toKey, to);
    await this.vault.settled(fromKey);
    const rec = this.vault.record(fromKey);
    const toLocal = this.localNames.matches(to);
    if (rec?.local || toLocal) return this.renameLocal(from, to, src, toLocal);
    if (rec && (rec.dirty || rec.remoteEtag === null)) await this.moveChanged(from, to, rec, dstExists);
    else await this.moveByCopy(from, to, src, dstExists);
    for (const h of this.handles.values()) if (h.path === from) h.path = to;
  }

  /**
   * A file with changes not uploaded yet (or one moved without storage): the pending upload goes to the new name,
   * whole; the old object goes away — but only once every byte it still holds for this file is in the vault, and
   * those bytes stay there (held against eviction) until the record no longer points at that object.
   */
  private async moveChanged(from: string, to: string, rec: FileRecord, dstExists: boolean): Promise<void> {
    const fromKey = pathToKey(from);
    const toKey = pathToKey(to);
    const hadObject = rec.remoteEtag !== null;
    // An upload whose answer was lost may have landed under the old name: that goes too (before, it stayed there).
    const mayHaveLanded = this.vault.uploadOutcomeUnknown(fromKey);
    const file = hadObject ? await this.vault.openFile(fromKey, { etag: rec.remoteEtag!, size: rec.size }, rec) : undefined;
    const letGo = file?.keepBlocks();
    try {
      await file?.fetchAll();
      this.vault.renameFile(fromKey, toKey);
      // Both deletes journaled: the old name's object, and the replaced target's (the upload to the new name sends
      // it before its PUT, so that object is no conflict).
      if (hadObject || mayHaveLanded) await this.deleteObjectOf(from, fromKey);
      if (dstExists) await this.deleteObjectOf(to, toKey);
      this.vault.detachRemote(toKey);
    } finally {
      letGo?.();
      if (file) await this.vault.closeFile(file);
    }
    if (!this.vault.isOpen(toKey)) this.vault.scheduleUpload(toKey);
    this.forgetName(from, fromKey);
    this.cache.delete(toKey);
  }

  /**
   * An unchanged file: a server-side copy, then the old name's delete, journaled. Without storage (offline, or
   * failing right now), a file the vault holds whole moves as a changed one does instead, uploaded under its new
   * name once storage is back: a `mv`, an editor's save, work offline as on a local disk.
   */
  private async moveByCopy(from: string, to: string, src: FileInfo, dstExists: boolean): Promise<void> {
    const fromKey = pathToKey(from);
    const toKey = pathToKey(to);
    let etag: string;
    let sent = false;
    // The version the copy takes: what the file's record, or a record made while the copy runs, is based on.
    const copied = this.vault.record(fromKey)?.remoteEtag ?? this.cache.get(fromKey)?.etag;
    try {
      await this.vault.sendDeletes(toKey); // a file removed there just before: its late delete would remove the copy
      sent = true;
      ({ etag } = await this.storage.copy(fromKey, toKey));
    } catch (err) {
      if (!(err instanceof StorageError && err.transient)) throw err;
      // The copy may have landed, its answer lost: what it left under the new name goes (journaled; an upload to
      // that name sends it first). Left, it showed as a second copy of a file `mv` said it had not moved, or stayed
      // under a name the file moved on from.
      const mayHaveLanded = sent && !dstExists;
      const live = this.vault.record(fromKey); // as it is now (opened or written while the copy was tried)
      if (!live || !this.vault.holdsWhole(fromKey)) {
        if (mayHaveLanded) this.vault.deleteObject(toKey);
        throw err;
      }
      return this.moveChanged(from, to, live, dstExists || mayHaveLanded);
    }
    this.vault.renameFile(fromKey, toKey);
    // The record is now based on the copy, also if written meanwhile (an open handle): the object it read from is
    // the copy now, whose ETag differs when the source was a multipart upload.
    this.vault.rebase(toKey, etag, {}, copied);
    // The source's delete is journaled and sent batched: the rename waits for the copy alone.
    await this.deleteObjectOf(from, fromKey);
    const link = this.links.get(fromKey);
    this.links.delete(fromKey);
    if (link) this.links.set(toKey, { etag, target: link.target });
    this.forgetName(from, fromKey);
    this.cache.set(toKey, { info: src, etag, complete: true });
  }

  /**
   * A rename that makes a file local, or a local file ordinary: the whole file comes into the vault, then
   * either leaves the bucket (now local) or is uploaded under its new name (no longer local).
   */
  private async renameLocal(from: string, to: string, src: FileInfo, toLocal: boolean): Promise<void> {
    const fromKey = pathToKey(from);
    const toKey = pathToKey(to);
    const rec = this.vault.record(fromKey);
    const base = rec ? (rec.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null) : await this.remoteBase(from, fromKey);
    const file = await this.vault.openFile(fromKey, base, rec ?? src);
    // Fetched whole, the blocks stay (held against eviction) until the record is local: its object goes first.
    const letGo = file.keepBlocks();
    try {
      await file.fetchAll();
      if (file.rec.remoteEtag !== null) await this.storage.delete(fromKey);
      if (toLocal) await this.storage.delete(toKey); // it replaces whatever had that name
      this.vault.renameFile(fromKey, toKey);
      this.vault.setLocal(toKey, toLocal);
    } finally {
      letGo();
      await this.vault.closeFile(file, { flush: FLUSH.DELAYED });
    }
    this.cache.set(fromKey, { info: null, complete: true });
    if (toLocal) this.cache.delete(toKey);
    for (const h of this.handles.values()) if (h.path === from) h.path = to;
  }

  private async renameDirectory(from: string, to: string, self: Change, dstExists: boolean): Promise<void> {
    const fromPrefix = dirPrefix(from);
    // Changes under either name wait until the move is over, and it begins once those running have ended.
    const endMove = await this.gate.beginMove(self, from, to);
    let moved = false;
    try {
      // What is pending under it goes up first, unless storage is (or goes) offline: then the vault moves what it
      // holds (before, the move waited for storage to come back).
      let sent: boolean | undefined;
      try {
        if (!this.vault.isOffline) sent = await this.vault.unlessOffline(this.sendUnder(fromPrefix).then(() => true));
      } catch (err) {
        if (!this.wentOffline(err)) throw err;
      }
      if (sent) await this.moveDirectoryInStorage(from, to, dstExists);
      else await this.moveDirectoryHeld(from, to, dstExists);
      moved = true;
    } finally {
      endMove(moved);
    }
  }

  /** A transient failure that took storage offline (the power wrapper's first failure does). */
  private wentOffline(err: unknown): boolean {
    return err instanceof StorageError && err.transient && this.vault.isOffline;
  }

  /**
   * Before a directory moves in storage: the deletes journaled under it go (files removed there are still in
   * storage: the copies must not bring them back, nor a delete at the target's name hide the moved directory), and
   * its pending changes go up, so the server-side copies carry them. All queued at once, the write-back queue bounds
   * how many run (one after another, `tar x` into a directory then `mv` paid a round trip per file).
   */
  private async sendUnder(fromPrefix: string): Promise<void> {
    if (this.vault.pendingDeletes) await this.vault.sendDeletes();
    await Promise.all(this.vault.pendingUnder(fromPrefix).flatMap((rec) => (rec.dirty && !rec.local ? [this.vault.flushFile(rec.key)] : [])));
  }

  private async moveDirectoryInStorage(from: string, to: string, dstExists: boolean): Promise<void> {
    const fromPrefix = dirPrefix(from);
    const toPrefix = dirPrefix(to);
    // A file still open under it may close meanwhile: its upload waits and follows the file to its new name.
    const release = this.vault.holdUploads(fromPrefix);
    try {
      await this.vault.uploadsSettledUnder(fromPrefix);
      // The target always gets a marker (with the source's attributes), so an empty directory survives the move.
      const info = (await this.getFileInfo(from))!;
      try {
        await this.putMarker(to, info, false);
      } catch (err) {
        // Nothing copied yet, nothing to finish after a restart: the vault moves what it holds.
        if (!this.wentOffline(err)) throw err;
        return await this.moveDirectoryHeld(from, to, dstExists);
      }
      const id = this.vault.beginRename(fromPrefix, toPrefix);
      // A transient failure half-way (a burst of 5xx or resets past the SDK's retries) is met by running the move
      // again a little later, from where it stopped. Before, the rename failed with EIO and left both trees, half
      // copied, until the next mount finished it.
      for (let attempt = 1; ; attempt++) {
        try {
          // A long directory move is progressing, not hung.
          await this.moveTree(fromPrefix, toPrefix, () => resetTimeout(from), attempt > 1);
          break;
        } catch (err) {
          if (!(err instanceof StorageError && err.transient) || attempt >= MOVE_ATTEMPTS) throw err;
          this.log.warn({ from, to, attempt, err: err.message }, 'directory move: a request failed; going on from where it stopped');
          await new Promise((r) => setTimeout(r, MOVE_RETRY_MS * attempt));
          await this.vault.checkOnline();
          resetTimeout(from);
        }
      }
      this.vault.endRename(id);
      this.movedDirectory(from, to, info);
    } finally {
      release();
    }
  }

  /**
   * A directory moved without storage: possible when the vault knows the whole tree under it (every directory in
   * it listed before or made here) and holds every file in it whole. Each file moves as a changed file does,
   * uploaded under its new name once storage is back, with its old object's delete journaled; directories get
   * markers at their new names, the old ones' deletes journaled. All in one commit. Otherwise EIO, as before.
   */
  private async moveDirectoryHeld(from: string, to: string, dstExists: boolean): Promise<void> {
    const fromPrefix = dirPrefix(from);
    const toPrefix = dirPrefix(to);
    const moveTo = (key: string): string => toPrefix + key.slice(fromPrefix.length);
    const letGo = [this.vault.holdUploads(fromPrefix), this.vault.holdUploads(toPrefix)];
    try {
      await this.vault.uploadsSettledUnder(fromPrefix);
      const tree = this.ns.knownTree(fromPrefix);
      if (!tree) throw new FsError(E.EIO, 'rename', from, 'storage is offline, and the vault does not know every directory under this one');
      const records = this.vault.recordsUnder(fromPrefix);
      const recorded = new Set(records.map((r) => r.key));
      const missing = tree.files.find((k) => !recorded.has(k)) ?? records.find((r) => !this.vault.holdsWhole(r.key))?.key;
      if (missing !== undefined) throw new FsError(E.EIO, 'rename', from, `storage is offline, and ${JSON.stringify(missing)} is not all in the vault`);
      const info = (await this.getFileInfo(from))!;
      // The empty directory it replaces: its marker goes (its delete before the new marker's upload: no conflict).
      if (dstExists) await this.releaseName(toPrefix, to, true);
      // Directories the vault has no marker record of get one at their new names (made as mkdir makes one): an
      // empty one would vanish otherwise. Their old markers, if storage has any, go.
      const bare = tree.dirs.filter((d) => !recorded.has(d));
      for (const d of bare) {
        const attrs = d === fromPrefix ? info : (this.cache.get(d.slice(0, -1))?.info ?? { mode: 0o755, uid: info.uid, gid: info.gid, mtimeMs: Date.now() });
        const marker = await this.vault.openFile(moveTo(d), null, { mode: attrs.mode, uid: attrs.uid, gid: attrs.gid, mtimeMs: attrs.mtimeMs });
        await this.vault.closeFile(marker, { flush: FLUSH.DELAYED });
      }
      this.vault.moveHeld(records.map((r) => ({ from: r.key, to: moveTo(r.key) })), bare);
      this.movedDirectory(from, to, info, true);
    } finally {
      for (const release of letGo) release();
    }
  }

  /**
   * After a directory move: the caches of both trees, and the handles open under it. `offline`: the parents'
   * listings are kept (the move's changes recorded on them), as nothing could list them again.
   */
  private movedDirectory(from: string, to: string, info: FileInfo, offline = false): void {
    // What is known of both trees (and of their parents' listings) is stale; the rest of the bucket is not.
    for (const key of [pathToKey(from), pathToKey(to)]) {
      if (offline) this.cache.forgetTree(key);
      else this.cache.forgetUnder(key);
    }
    // A listing of the parent taken before the move may still land (a walk's look-up listing): both names'
    // changes are replayed on it, as a file rename's are. Without this the old name came back from it, EEXIST
    // to mkdir.
    this.forgetName(from, pathToKey(from));
    this.cache.set(pathToKey(to), { info, complete: true });
    for (const h of this.handles.values()) if (h.path.startsWith(`${from}/`)) h.path = to + h.path.slice(from.length);
  }

  /**
   * Copy every key under one prefix to another, then delete the sources: a failure half-way leaves both
   * trees, never neither, and running it again (after a crash, from the rename journal) finishes the job.
   */
  private async moveTree(fromPrefix: string, toPrefix: string, progress?: () => void, again = false): Promise<void> {
    const all = await this.storage.list(fromPrefix);
    // Run again (after a failure or a crash): what the earlier run copied, as storage has it now.
    const landed = again ? new Map((await this.storage.list(toPrefix)).objects.map((o) => [o.key, o.etag])) : undefined;
    // Copies run MOVE_CONCURRENCY at a time; the first failure stops the queue (those in flight end) and stands:
    // no source has been deleted yet.
    const queue = new PQueue({ concurrency: MOVE_CONCURRENCY });
    let failure: { err: unknown } | undefined;
    for (const o of all.objects) {
      if (o.key === fromPrefix) continue;
      const target = toPrefix + o.key.slice(fromPrefix.length);
      // Moved by an earlier run of this move (its record is at the target, based on the object there, and none is
      // left here): copied already, and perhaps changed there since (an open file written before a crash). Copied
      // again, the old bytes came back over the changes.
      const there = landed?.get(target);
      if (there !== undefined && this.vault.record(target)?.remoteEtag === there && !this.vault.record(o.key)) continue;
      queue
        .add(async () => {
          let etag: string;
          try {
            ({ etag } = await this.storage.copy(o.key, target));
          } catch (err) {
            // Removed by another client since the listing: as if before the move.
            if (err instanceof StorageError && err.httpStatus === 404) return;
            throw err;
          }
          this.vault.renameFile(o.key, target);
          // A record based on the source's version (changed here since, even) is now based on the copy.
          this.vault.rebaseMoved(target, o.etag, etag);
          progress?.();
        })
        .catch((err: unknown) => {
          failure ??= { err };
          queue.clear();
        });
    }
    await queue.onIdle();
    if (failure) throw failure.err;
    // Local files, and files made under it that have no object yet (their uploads held): only their records move.
    for (const rec of this.vault.pendingUnder(fromPrefix)) {
      if (rec.key !== fromPrefix && (rec.local || rec.remoteEtag === null)) this.vault.renameFile(rec.key, toPrefix + rec.key.slice(fromPrefix.length));
    }
    await this.storage.deleteMany(all.objects.map((o) => o.key));
    if (!all.objects.some((o) => o.key === fromPrefix)) await this.storage.delete(fromPrefix);
    // The source's own marker is gone, and the target has its own (written first). A record of the source marker
    // left in the vault (a directory made through the mount) kept the old name alive: listed, and EEXIST to mkdir.
    this.vault.removeRecord(fromPrefix);
  }

  /** Finish directory renames a crash interrupted (the rename journal), before serving. */
  async finishInterruptedRenames(): Promise<void> {
    for (const r of this.vault.pendingRenames()) {
      try {
        const marker = await this.storage.head(r.toPrefix);
        if (!marker) await this.storage.write(r.toPrefix, 0, async () => Buffer.alloc(0), { contentType: DIR_CONTENT_TYPE });
        // Orphans under either name (changed before the crash) go up after the move, not during it.
        const letGo = [this.vault.holdUploads(r.fromPrefix), this.vault.holdUploads(r.toPrefix)];
        try {
          await this.vault.uploadsSettledUnder(r.fromPrefix);
          await this.vault.uploadsSettledUnder(r.toPrefix);
          await this.moveTree(r.fromPrefix, r.toPrefix, undefined, true);
        } finally {
          for (const release of letGo) release();
        }
        this.vault.endRename(r.id);
        this.log.warn({ from: r.fromPrefix, to: r.toPrefix }, 'finished a directory rename interrupted by a crash');
      } catch (err) {
        this.log.error({ from: r.fromPrefix, to: r.toPrefix, err: (err as Error).message }, 'could not finish an interrupted directory rename; will retry at the next mount');
      }
      // Only what the move touched: the stored listings of the rest of the bucket stay warm across the remount.
      this.cache.forgetUnder(r.fromPrefix.slice(0, -1));
      this.cache.forgetUnder(r.toPrefix.slice(0, -1));
    }
  }

  // ---- symbolic links: s3fs's symlink objects (the body is the target, the mode has S_IFLNK) ----

  async createSymlink(path: string, target: string, caller: Caller): Promise<FileInfo> {
    this.writable('symlink', path);
    checkNewName(path, 'symlink', this.nameMax);
    return this.gate.change([path], true, ([path]) => this.run('symlink', path, async () => {
      if (await this.getFileInfo(path)) throw new FsError(E.EEXIST, 'symlink', path);
      await this.inDirectory(path, 'symlink');
      const body = Buffer.from(target);
      const key = pathToKey(path);
      // Journaled like a new file's close, and uploaded by the write-back queue as s3fs's symlink object: the
      // record's mode keeps S_IFLNK, its data is the target. `ln -s` waits for no request and works offline.
      const file = await this.vault.openFile(key, null, { mode: S_IFLNK | 0o777, uid: caller.uid, gid: caller.gid, mtimeMs: Date.now(), xattrs: null });
      let info: FileInfo;
      try {
        await file.write(0, body);
        await file.commit(false);
        info = this.fileInfoOf(file);
      } finally {
        await this.vault.closeFile(file, { flush: FLUSH.DELAYED });
      }
      this.cache.set(key, { info, complete: true });
      return info;
    }));
  }

  async readSymlink(path: string): Promise<string> {
    // Through the move gate, as an open: beside a move of its directory it read the link's moved record's old
    // name in storage (EIO).
    return this.gate.change([path], false, ([path]) => this.run('readlink', path, async () => {
      const info = await this.getFileInfo(path);
      if (!info) throw new FsError(E.ENOENT, 'readlink', path);
      if (info.kind !== 'symlink') throw new FsError(E.EINVAL, 'readlink', path);
      const key = pathToKey(path);
      // One made here, not replaced in storage since: the vault holds its target (fetched again if evicted).
      const etag = this.cache.get(key)?.etag;
      const rec = this.vault.record(key);
      if (rec && (rec.mode & S_IFMT) === S_IFLNK && (rec.dirty || rec.remoteEtag === null || etag === undefined || etag === rec.remoteEtag)) {
        const file = await this.vault.openFile(key, rec.remoteEtag ? { etag: rec.remoteEtag, size: rec.size } : null, rec);
        try {
          return (await file.read(0, rec.size)).toString('utf8');
        } finally {
          await this.vault.closeFile(file);
        }
      }
      const known = this.links.get(key);
      if (known && (etag === undefined || known.etag === etag)) return known.target;
      const { data } = await this.storage.read(key, 0, Math.max(info.size, 1));
      const target = data.toString('utf8');
      if (etag) this.links.set(key, { etag, target });
      return target;
    }));
  }

  // ---- extended attributes: user.* in the object's metadata (s3fs), user.s3vault.tag.* the vault's tags (R43) ----

  /** Full information, with the extended attributes (a directory listed but never looked up has them only on its marker). */
  private async fullInfo(path: string, op: string): Promise<FileInfo> {
    let info = await this.getFileInfo(path);
    if (info?.kind === 'dir' && path !== '/' && info.xattrs === undefined) info = (await this.ns.lookupRemote(pathToKey(path))) ?? info;
    if (!info) throw new FsError(E.ENOENT, op, path);
    return info;
  }

  async getExtendedAttribute(path: string, name: string): Promise<Buffer | null> {
    const key = pathToKey(path);
    if (name === ETAG_XATTR) {
      const etag = this.vault.record(key)?.remoteEtag ?? this.cache.get(key)?.etag;
      return etag ? Buffer.from(etag) : null;
    }
    if (parseTagName(name) !== undefined) return this.run('getxattr', path, async () => this.vault.getTag(key, parseTagName(name)!) ?? null);
    if (!name.startsWith('user.')) return null;
    return this.run('getxattr', path, async () => decodeXattrs((await this.fullInfo(path, 'getxattr')).xattrs).get(name) ?? null);
  }

  async listExtendedAttributes(path: string): Promise<string[]> {
    return this.run('listxattr', path, async () => {
      const key = pathToKey(path);
      const names = [...decodeXattrs((await this.fullInfo(path, 'listxattr')).xattrs).keys()];
      if (this.vault.record(key)?.remoteEtag ?? this.cache.get(key)?.etag) names.push(ETAG_XATTR);
      names.push(...this.vault.listTags(key).map((t) => tagName(t.id)));
      return names;
    });
  }

  async setExtendedAttribute(path: string, name: string, value: Buffer): Promise<void> {
    this.writable('setxattr', path);
    const id = parseTagName(name);
    if (id !== undefined) {
      return this.run('setxattr', path, async () => {
        const key = pathToKey(path);
        if (!this.vault.record(key)) {
          // Tags belong to a vault record: give the file one.
          const h = await this.openFile(path, 0);
          await this.closeFile(h);
        }
        this.vault.setTag(key, id, value);
      });
    }
    return this.changeXattrs(path, 'setxattr', (all) => {
      all.set(name, value);
      return true;
    }).then(() => undefined);
  }

  async removeExtendedAttribute(path: string, name: string): Promise<boolean> {
    this.writable('removexattr', path);
    const id = parseTagName(name);
    if (id !== undefined) return this.run('removexattr', path, async () => this.vault.deleteTag(pathToKey(path), id));
    return this.changeXattrs(path, 'removexattr', (all) => all.delete(name));
  }

  /** user.* attributes change like a chmod: with the next upload, or by a metadata copy of the object. */
  private async changeXattrs(path: string, op: string, edit: (all: Map<string, Buffer>) => boolean): Promise<boolean> {
    return this.run(op, path, async () => {
      const info = await this.fullInfo(path, op);
      const all = decodeXattrs(info.xattrs);
      if (!edit(all)) return false;
      for (const n of all.keys()) if (!n.startsWith('user.')) throw new FsError(E.ENOTSUP, op, path, 'only user.* extended attributes are stored');
      const xattrs = encodeXattrs(all);
      if (metaBytes(encodeMeta(info.kind, { ...info, xattrs })) > USER_META_MAX) throw new FsError(E.E2BIG, op, path, `S3 keeps at most ${USER_META_MAX} bytes of metadata per object`);
      await this.setFileAttributes(path, { xattrs });
      return true;
    });
  }

  // ---- space: fallocate and SEEK_DATA / SEEK_HOLE ----

  async allocateSpace(handle: number, mode: number, offset: number, length: number): Promise<void> {
    const h = this.handle(handle, 'fallocate');
    this.writable('fallocate', h.path);
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) throw new FsError(E.EOPNOTSUPP, 'fallocate', h.path);
    if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) throw new FsError(E.EOPNOTSUPP, 'fallocate', h.path);
    const end = offset + length;
    if (end > MAX_OBJECT) throw new FsError(E.EFBIG, 'fallocate', h.path, 'S3 objects are limited to 5 TiB');
    return this.run('fallocate', h.path, async () => {
      const file = h.file;
      // Its size decides what grows and what is zeroed: the kernel's passthrough writes count.
      file.adoptIfWritten();
      const keep = (mode & FALLOC_FL_KEEP_SIZE) !== 0;
      if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        // Zeros are written (S3 objects have no holes); with KEEP_SIZE never past the end.
        const stop = keep ? Math.min(end, file.size) : end;
        for (let at = offset; at < stop; at += ZEROS.length) await file.write(at, ZEROS.subarray(0, Math.min(ZEROS.length, stop - at)));
      } else if (!keep && end > file.size) {
        await file.setSize(end); // S3 has no preallocation: the size grows, the new bytes are zeros
      }
      if (h.writeThrough) await file.commit();
    });
  }

  async seekData(handle: number, offset: number, whence: number): Promise<number> {
    const h = this.handle(handle, 'lseek');
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError(E.EINVAL, 'lseek', h.path);
    const at = h.file.seekData(offset, whence === SEEK_HOLE);
    if (at === null) throw new FsError(E.ENXIO, 'lseek', h.path);
    return at;
  }

  getVolumeSize(): { total: number; free: number; nameMax: number } {
    const total = this.options.capacityBytes ?? 2 ** 50;
    return { total, free: total, nameMax: this.nameMax };
  }

  private get nameMax(): number {
    return Math.min(this.options.nameMax ?? NAME_MAX, NAME_MAX);
  }
}
