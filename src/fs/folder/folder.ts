/**
 * A second backend on the CBFS event API: a local folder, mounted elsewhere (like libfuse's passthrough example).
 * It exists to show that a storage backend is mounted by writing event handlers only — no FUSE code, no vault —
 * and it is handy for testing the event layer against a plain directory. Run it with `s3vault mount-folder`.
 */
import { constants as C } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import { statfsSync } from 'node:fs';
import path from 'node:path';
import type { AttributeChange, Caller, CbfsHandlers, DirEntry, FileInfo } from '../cbfs/events.js';
import { FALLOC_FL_KEEP_SIZE, RENAME_EXCHANGE, RENAME_NOREPLACE, SEEK_HOLE } from '../cbfs/events.js';
import { E, FsError } from '../errors.js';

function info(st: import('node:fs').Stats): FileInfo {
  const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
  return { kind, size: kind === 'dir' ? 0 : st.size, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs };
}

/** Node's errors carry an errno code name: turn it into an FsError for the event. */
async function run<T>(op: string, p: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof FsError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const errno = code && code in E ? E[code as keyof typeof E] : E.EIO;
    throw new FsError(errno, op, p, (err as Error).message, { cause: err });
  }
}

export class FolderBackend implements CbfsHandlers {
  private readonly handles = new Map<number, FileHandle>();
  private next = 1;

  constructor(private readonly root: string) {}

  private real(p: string): string {
    return path.join(this.root, p);
  }

  private handle(h: number, op: string): FileHandle {
    const fh = this.handles.get(h);
    if (!fh) throw new FsError(E.EBADF, op, `handle ${h}`);
    return fh;
  }

  private add(fh: FileHandle): number {
    const h = this.next++;
    this.handles.set(h, fh);
    return h;
  }

  async mount(): Promise<void> {
    await run('mount', this.root, async () => {
      if (!(await fs.stat(this.root)).isDirectory()) throw new FsError(E.ENOTDIR, 'mount', this.root);
    });
  }
  async unmount(): Promise<void> {
    for (const fh of this.handles.values()) await fh.close().catch(() => undefined);
    this.handles.clear();
  }
  getFileInfo(p: string): Promise<FileInfo | null> {
    return run('getattr', p, async () => {
      try {
        return info(await fs.lstat(this.real(p)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw err;
      }
    });
  }
  getHandleInfo(h: number): Promise<FileInfo> {
    return run('getattr', `handle ${h}`, async () => info(await this.handle(h, 'getattr').stat()));
  }
  enumerateDirectory(p: string): Promise<DirEntry[]> {
    return run('readdir', p, async () => {
      const out: DirEntry[] = [];
      for (const name of await fs.readdir(this.real(p))) {
        const st = await fs.lstat(path.join(this.real(p), name)).catch(() => null);
        if (st) out.push({ name, info: info(st) });
      }
      return out;
    });
  }
  createFile(p: string, mode: number, flags: number, caller: Caller): Promise<{ handle: number; info: FileInfo }> {
    return run('create', p, async () => {
      const fh = await fs.open(this.real(p), (flags & ~C.O_NOFOLLOW) | C.O_CREAT, mode);
      await fh.chown(caller.uid, caller.gid).catch(() => undefined);
      return { handle: this.add(fh), info: info(await fh.stat()) };
    });
  }
  createDirectory(p: string, mode: number, caller: Caller): Promise<FileInfo> {
    return run('mkdir', p, async () => {
      await fs.mkdir(this.real(p), mode);
      await fs.lchown(this.real(p), caller.uid, caller.gid).catch(() => undefined);
      return info(await fs.lstat(this.real(p)));
    });
  }
  createSymlink(p: string, target: string, caller: Caller): Promise<FileInfo> {
    return run('symlink', p, async () => {
      await fs.symlink(target, this.real(p));
      await fs.lchown(this.real(p), caller.uid, caller.gid).catch(() => undefined);
      return info(await fs.lstat(this.real(p)));
    });
  }
  readSymlink(p: string): Promise<string> {
    return run('readlink', p, () => fs.readlink(this.real(p)));
  }
  openFile(p: string, flags: number): Promise<number> {
    return run('open', p, async () => this.add(await fs.open(this.real(p), flags & ~C.O_CREAT)));
  }
  readFile(h: number, offset: number, length: number): Promise<Buffer> {
    return run('read', `handle ${h}`, async () => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await this.handle(h, 'read').read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    });
  }
  writeFile(h: number, offset: number, data: Buffer): Promise<number> {
    return run('write', `handle ${h}`, async () => (await this.handle(h, 'write').write(data, 0, data.length, offset)).bytesWritten);
  }
  async cleanupFile(): Promise<void> {}
  closeFile(h: number): Promise<void> {
    return run('release', `handle ${h}`, async () => {
      const fh = this.handles.get(h);
      this.handles.delete(h);
      await fh?.close();
    });
  }
  flushFile(h: number, dataOnly: boolean): Promise<void> {
    return run('fsync', `handle ${h}`, () => (dataOnly ? this.handle(h, 'fsync').datasync() : this.handle(h, 'fsync').sync()));
  }
  setFileAttributes(p: string, change: AttributeChange, h?: number): Promise<FileInfo> {
    return run('setattr', p, async () => {
      const fh = h !== undefined ? this.handles.get(h) : undefined;
      const real = this.real(p);
      if (change.size !== undefined) await (fh ? fh.truncate(change.size) : fs.truncate(real, change.size));
      if (change.mode !== undefined) await (fh ? fh.chmod(change.mode) : fs.chmod(real, change.mode));
      if (change.uid !== undefined || change.gid !== undefined) await (fh ? fh.chown(change.uid ?? -1, change.gid ?? -1) : fs.lchown(real, change.uid ?? -1, change.gid ?? -1));
      if (change.mtimeMs !== undefined) await (fh ? fh.utimes(new Date(), new Date(change.mtimeMs)) : fs.lutimes(real, new Date(), new Date(change.mtimeMs)));
      return info(fh ? await fh.stat() : await fs.lstat(real));
    });
  }
  deleteFile(p: string): Promise<void> {
    return run('unlink', p, () => fs.unlink(this.real(p)));
  }
  deleteDirectory(p: string): Promise<void> {
    return run('rmdir', p, () => fs.rmdir(this.real(p)));
  }
  renameOrMoveFile(from: string, to: string, flags: number): Promise<void> {
    return run('rename', from, async () => {
      if (flags & RENAME_EXCHANGE) throw new FsError(E.EINVAL, 'rename', from, 'RENAME_EXCHANGE is not offered by this backend');
      if (flags & RENAME_NOREPLACE && (await this.getFileInfo(to))) throw new FsError(E.EEXIST, 'rename', to);
      await fs.rename(this.real(from), this.real(to));
    });
  }
  // Extended attributes: Node has no xattr API; this backend has none.
  async getExtendedAttribute(): Promise<Buffer | null> {
    return null;
  }
  async listExtendedAttributes(): Promise<string[]> {
    return [];
  }
  async setExtendedAttribute(p: string): Promise<void> {
    throw new FsError(E.ENOTSUP, 'setxattr', p);
  }
  async removeExtendedAttribute(): Promise<boolean> {
    return false;
  }
  allocateSpace(h: number, mode: number, offset: number, length: number): Promise<void> {
    return run('fallocate', `handle ${h}`, async () => {
      if (mode & ~FALLOC_FL_KEEP_SIZE) throw new FsError(E.EOPNOTSUPP, 'fallocate', `handle ${h}`);
      const fh = this.handle(h, 'fallocate');
      if (!(mode & FALLOC_FL_KEEP_SIZE) && (await fh.stat()).size < offset + length) await fh.truncate(offset + length);
    });
  }
  seekData(h: number, offset: number, whence: number): Promise<number> {
    // Node has no SEEK_DATA: the whole file is data.
    return run('lseek', `handle ${h}`, async () => {
      const size = (await this.handle(h, 'lseek').stat()).size;
      if (offset >= size) throw new FsError(E.ENXIO, 'lseek', `handle ${h}`);
      return whence === SEEK_HOLE ? size : offset;
    });
  }
  getVolumeSize(): { total: number; free: number } {
    const s = statfsSync(this.root);
    return { total: s.blocks * s.bsize, free: s.bavail * s.bsize };
  }
}
