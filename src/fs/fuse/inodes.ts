/**
 * Inode numbers ↔ paths, with the kernel's lookup counts (passthrough_ll's refcount + forget): an inode
 * lives while the kernel holds a reference, and keeps its number for as long as the mount lives once seen
 * (so `ls -i` and `find` stay stable). Rename moves a path and everything under it.
 */
import type { FileInfo } from '../cbfs/events.js';

export const ROOT_INO = 1;

interface Node {
  path: string;
  nlookup: number;
  /** A directory's attributes as last told to the kernel: what it still shows once removed while in use. */
  dir?: FileInfo;
  /** The kind of object the kernel was told this number stands for. */
  kind?: FileInfo['kind'];
}

const DELETED = '\0deleted';

export class InodeTable {
  private readonly byIno = new Map<number, Node>([[ROOT_INO, { path: '/', nlookup: 1, kind: 'dir' }]]);
  private readonly byPath = new Map<string, number>([['/', ROOT_INO]]);
  private next = ROOT_INO + 1;

  path(ino: number): string | undefined {
    return this.byIno.get(ino)?.path;
  }

  /** The number a path has or will get, without taking a reference (readdir d_ino). */
  peek(path: string): number {
    let ino = this.byPath.get(path);
    if (ino === undefined) {
      ino = this.next++;
      this.byPath.set(path, ino);
      this.byIno.set(ino, { path, nlookup: 0 });
    }
    return ino;
  }

  peekExisting(path: string): number | undefined {
    return this.byPath.get(path);
  }

  /**
   * A successful lookup/create/mkdir: the kernel now holds one more reference. An object of another kind than the
   * path's number stood for is another object (the path was replaced by a change this table learnt of late, or
   * not at all): it gets a new number, since the kernel marks an inode whose type changes bad (EIO on every use).
   */
  lookup(path: string, kind?: FileInfo['kind']): number {
    if (kind !== undefined && !this.sameKind(this.byPath.get(path), kind)) this.remove(path);
    const ino = this.peek(path);
    const node = this.byIno.get(ino)!;
    node.nlookup++;
    if (kind !== undefined) node.kind = kind;
    return ino;
  }

  /** Whether the number (if any) stands for an object of this kind, or of a kind not known yet. */
  sameKind(ino: number | undefined, kind: FileInfo['kind']): boolean {
    const known = ino === undefined ? undefined : this.byIno.get(ino)?.kind;
    return known === undefined || known === kind;
  }

  /** The number no longer stands for its path's object (which is of another kind now): it is detached from it. */
  detach(ino: number): void {
    const path = this.byIno.get(ino)?.path;
    if (path !== undefined && this.byPath.get(path) === ino) this.remove(path);
  }

  forget(ino: number, n: number): void {
    const node = this.byIno.get(ino);
    if (!node || ino === ROOT_INO) return;
    node.nlookup = Math.max(0, node.nlookup - n);
  }

  /** The path no longer exists (unlink, rmdir): a new file there gets a new number. */
  remove(path: string): void {
    const ino = this.byPath.get(path);
    if (ino === undefined) return;
    this.byPath.delete(path);
    const node = this.byIno.get(ino)!;
    node.path = `${path}${DELETED}`;
  }

  /** The number stood for a path that was removed (unlink, rmdir, replaced by a rename). */
  removed(ino: number): boolean {
    return this.byIno.get(ino)?.path.endsWith(DELETED) ?? false;
  }

  /** Note a directory's attributes as told to the kernel (other kinds are ignored). */
  noteDir(ino: number, info: FileInfo): void {
    if (info.kind !== 'dir') return;
    const node = this.byIno.get(ino);
    if (node) node.dir = info;
  }

  /** A removed directory's last attributes, for the processes still in it (a shell's working directory). */
  removedDir(ino: number): FileInfo | undefined {
    const node = this.byIno.get(ino);
    return node?.dir && node.path.endsWith(DELETED) ? { ...node.dir, size: 0, nlink: 0 } : undefined;
  }

  rename(from: string, to: string): void {
    this.remove(to);
    const moves: [string, number][] = [];
    for (const [p, ino] of this.byPath) if (p === from || p.startsWith(`${from}/`)) moves.push([p, ino]);
    for (const [p, ino] of moves) {
      const np = to + p.slice(from.length);
      this.byPath.delete(p);
      this.byPath.set(np, ino);
      this.byIno.get(ino)!.path = np;
    }
  }

  /** RENAME_EXCHANGE: the two paths (and what is under them) trade places. */
  exchange(a: string, b: string): void {
    const tmp = `${a}\0exchange`;
    this.rename(a, tmp);
    this.rename(b, a);
    this.rename(tmp, b);
  }

  /** The inode numbers of a path and everything known under it (for kernel cache invalidation). */
  under(path: string): { path: string; ino: number }[] {
    const out: { path: string; ino: number }[] = [];
    for (const [p, ino] of this.byPath) if (p === path || path === '/' || p.startsWith(`${path}/`)) out.push({ path: p, ino });
    return out;
  }

  get size(): number {
    return this.byIno.size;
  }
}
