/**
 * The CBFS event API: what a filesystem implementation handles, named after the CBFS events
 * (spec/seed-inventory.md §1.1). It is path-based and knows nothing of FUSE: the FUSE adapter
 * (src/fs/fuse) turns kernel requests into these calls, and any backend can be mounted by implementing
 * them. Handlers throw FsError to fail an event with an errno.
 */

export type FileKind = 'file' | 'dir' | 'symlink';

export interface FileInfo {
  kind: FileKind;
  size: number;
  /** Permission bits (07777), without the file-type bits. */
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  /** The backend's encoded extended attributes, opaque to the adapter (the mirror: s3fs's `xattr` header). */
  xattrs?: string | null;
  /** Link count, when not the usual (1 for files, 2 for directories): 0 for a directory removed while in use. */
  nlink?: number;
}

export interface DirEntry {
  name: string;
  info: FileInfo;
  /**
   * The info holds every attribute a GetFileInfo would report (not defaults standing in for unknown ones): the
   * adapter may give it to the kernel with the listing (FUSE READDIRPLUS), saving a look-up per entry.
   */
  exact?: boolean;
}

/**
 * NotifyDirectoryChange (R26): how a backend tells the adapter that something changed behind its back (another
 * writer, `s3vault refresh`), so the kernel forgets what it cached about the path (and, for a directory, under it).
 */
export interface ChangeNotifier {
  /** Resolves once the kernel has taken every invalidation (`s3vault refresh` returns only then). */
  invalidate(path: string): Promise<void>;
}

export interface Caller {
  uid: number;
  gid: number;
  pid: number;
}

export interface AttributeChange {
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeMs?: number;
  size?: number;
  xattrs?: string | null;
}

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
export const FALLOC_FL_KEEP_SIZE = 1;
export const FALLOC_FL_PUNCH_HOLE = 2;
export const FALLOC_FL_ZERO_RANGE = 0x10;

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

export interface CbfsHandlers {
  /** Mount: the volume is about to go live (the adapter calls it before serving the first request). */
  mount(): Promise<void>;
  /** Unmount: flush everything; no event follows. */
  unmount(): Promise<void>;
  /** GetFileInfo: null when the path does not exist. */
  getFileInfo(path: string): Promise<FileInfo | null>;
  /** GetFileInfo of an open file by its handle: it may have no name any more (unlinked or replaced while open). */
  getHandleInfo(handle: number): Promise<FileInfo>;
  /** EnumerateDirectory: every entry of a directory, without "." and "..". */
  enumerateDirectory(path: string): Promise<DirEntry[]>;
  /** CreateFile for a file: returns the handle of the new open file. */
  createFile(path: string, mode: number, flags: number, caller: Caller): Promise<{ handle: number; info: FileInfo }>;
  /** CreateFile for a directory. */
  createDirectory(path: string, mode: number, caller: Caller): Promise<FileInfo>;
  /** OpenFile: returns a handle (handle context). */
  openFile(path: string, flags: number): Promise<number>;
  readFile(handle: number, offset: number, length: number): Promise<Buffer>;
  /**
   * Optional ReadFile without a copy through JavaScript: the backend makes the bytes available in a file and has
   * the adapter send them from it (`send`). False: not possible for this handle; use readFile.
   */
  readFileInto?(handle: number, offset: number, length: number, send: (fd: number, offset: number, length: number) => Promise<void>): Promise<boolean>;
  writeFile(handle: number, offset: number, data: Buffer): Promise<number>;
  /** CleanupFile: one close(2) of a handle (may fire several times per handle after dup). */
  cleanupFile(handle: number): Promise<void>;
  /** CloseFile: the handle is gone. */
  closeFile(handle: number): Promise<void>;
  /** FlushFile: fsync/fdatasync of an open file. */
  flushFile(handle: number, dataOnly: boolean): Promise<void>;
  /** SetFileAttributes and SetFileSize in one: returns the new info. */
  setFileAttributes(path: string, change: AttributeChange, handle?: number): Promise<FileInfo>;
  /** DeleteFile of a file (CanFileBeDeleted is part of it). */
  deleteFile(path: string): Promise<void>;
  /** DeleteFile of a directory: fails with ENOTEMPTY unless IsDirectoryEmpty. */
  deleteDirectory(path: string): Promise<void>;
  /** RenameOrMoveFile, with RENAME_NOREPLACE / RENAME_EXCHANGE flags. */
  renameOrMoveFile(from: string, to: string, flags: number): Promise<void>;
  /** QueryEa: one extended attribute's value, or null if the file has none of that name. */
  getExtendedAttribute(path: string, name: string): Promise<Buffer | null>;
  /** QueryEa: the names of the file's extended attributes. */
  listExtendedAttributes(path: string): Promise<string[]>;
  /** SetEa: set one extended attribute. */
  setExtendedAttribute(path: string, name: string, value: Buffer): Promise<void>;
  /** SetEa: remove one; false if there was none. */
  removeExtendedAttribute(path: string, name: string): Promise<boolean>;
  /** CreateFile for a symbolic link holding `target`. */
  createSymlink(path: string, target: string, caller: Caller): Promise<FileInfo>;
  /** The target of a symbolic link. */
  readSymlink(path: string): Promise<string>;
  /** SetAllocationSize / ZeroizeFileRange (fallocate): mode is a FALLOC_FL_* mask. */
  allocateSpace(handle: number, mode: number, offset: number, length: number): Promise<void>;
  /** SEEK_DATA / SEEK_HOLE: the next data or hole offset at or after `offset`; ENXIO past the end. */
  seekData(handle: number, offset: number, whence: number): Promise<number>;
  /** GetVolumeSize, in bytes; nameMax: the longest name it takes, in bytes (statfs f_namemax; default 255). */
  getVolumeSize(): { total: number; free: number; nameMax?: number };
  /**
   * Optional: a token naming the version of an open file's data. When it equals the token of the inode's previous
   * open, the adapter lets the kernel keep its page cache (FUSE keep_cache) instead of reading everything again.
   */
  cacheToken?(handle: number): string | undefined;
  /**
   * Optional (FUSE passthrough): a descriptor of a file holding an open file's whole data, which the kernel may
   * then read and write directly; undefined when there is none (data not all local). `force`: the inode already
   * serves other handles that way and the kernel requires the same of this one.
   */
  passthroughFd?(handle: number, force: boolean): number | undefined;
  /** Optional: the adapter did hand the handle to the kernel by passthrough (`writable`: it may write, too). */
  passthroughOpened?(handle: number, writable: boolean): void;
  /** Optional: take in what the kernel wrote through a passthrough handle (size and data) before answering. */
  adoptPassthroughWrites?(handle: number): void;
  /**
   * Optional: the attributes of a file open now, as they are at this moment (writes since included). A directory
   * reply with attributes (READDIRPLUS) sends these rather than those its listing had when the directory was opened:
   * the kernel takes them as the file's, size included, so an older size would shorten reads until it looks again.
   */
  openFileInfo?(path: string): FileInfo | undefined;
  /** Optional: the adapter hands the backend its NotifyDirectoryChange channel at mount time. */
  setNotifier?(notifier: ChangeNotifier): void;
}
