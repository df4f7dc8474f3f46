/**
 * The versions view: in every directory of a mount, a hidden read-only directory `.s3vault-versions` (never
 * listed, always reachable by name) holds one directory per file that has stored versions, and in it one file per
 * version, named by its time (ISO 8601 UTC, milliseconds), with that version's size and content:
 *     docs/.s3vault-versions/report.txt/2026-11-01T12:00:00.000Z
 * Reads go straight to storage (a versioned GET), not through the vault. On a bucket without versioning the
 * view holds one file, VERSIONING-IS-OFF.txt, that says so.
 */
import type { ObjectVersion, StorageDriver, VersioningState } from '../../storage/driver.js';
import type { DirEntry, FileInfo } from '../cbfs/events.js';
import { E, FsError } from '../errors.js';
import type { Owner } from './meta.js';

export const VERSIONS_DIR = '.s3vault-versions';
export const VERSIONING_OFF = 'VERSIONING-IS-OFF.txt';

/** A path inside a versions view: the directory it belongs to, the file, the version's name. */
export interface VersionsPath {
  dir: string;
  name?: string;
  stamp?: string;
}

export function parseVersionsPath(path: string): VersionsPath | null {
  const at = path.indexOf(`/${VERSIONS_DIR}`);
  if (at < 0) return null;
  const after = path.slice(at + VERSIONS_DIR.length + 1);
  if (after !== '' && !after.startsWith('/')) return null;
  const [name, stamp, ...more] = after.split('/').filter(Boolean);
  if (more.length) return { dir: '\0', name: '\0' }; // deeper than the view goes: does not exist
  return { dir: path.slice(0, at) || '/', name, stamp };
}

/** One version's file name: its time, and its id when two versions share a millisecond. */
export function versionNames(versions: ObjectVersion[]): Map<string, ObjectVersion> {
  const out = new Map<string, ObjectVersion>();
  for (const v of versions) {
    if (v.deleteMarker) continue;
    const base = v.lastModified.toISOString();
    out.set(out.has(base) ? `${base}~${v.versionId}` : base, v);
  }
  return out;
}

interface VersionHandle {
  key: string;
  versionId: string;
  size: number;
}

export class VersionsView {
  private state: { value: VersioningState; at: number } | undefined;
  private readonly handles = new Map<number, VersionHandle>();

  constructor(
    private readonly storage: StorageDriver,
    private readonly owner: Owner,
    private readonly mountedAt: number,
  ) {}

  private dirInfo(): FileInfo {
    return { kind: 'dir', size: 0, mode: 0o555, uid: this.owner.uid, gid: this.owner.gid, mtimeMs: this.mountedAt };
  }

  private offText(): Buffer {
    return Buffer.from(`Versioning is not enabled on ${this.storage.description}: S3 keeps no earlier versions of these files.\nEnable it on the bucket (PutBucketVersioning) and versions made from then on show here.\n`);
  }

  /** Versioning state, asked at most once a minute. */
  async versioning(): Promise<VersioningState> {
    if (!this.storage.versions) return 'Off';
    if (!this.state || Date.now() - this.state.at > 60_000) this.state = { value: await this.storage.versions.versioning(), at: Date.now() };
    return this.state.value;
  }

  private keyOf(p: VersionsPath): string {
    const dir = p.dir === '/' ? '' : `${p.dir.slice(1)}/`;
    return dir + p.name!;
  }

  /** Every version of one key, newest first (delete markers included). */
  async versionsOf(key: string): Promise<ObjectVersion[]> {
    if (!this.storage.versions || (await this.versioning()) === 'Off') return [];
    return (await this.storage.versions.listVersions(key, { onlyKey: key })).versions;
  }

  async info(p: VersionsPath): Promise<FileInfo | null> {
    if (p.name === undefined) return this.dirInfo();
    if ((await this.versioning()) === 'Off') {
      return p.name === VERSIONING_OFF && p.stamp === undefined ? { ...this.dirInfo(), kind: 'file', mode: 0o444, size: this.offText().length } : null;
    }
    const versions = versionNames(await this.versionsOf(this.keyOf(p)));
    if (!versions.size) return null;
    if (p.stamp === undefined) return this.dirInfo();
    const v = versions.get(p.stamp);
    if (!v) return null;
    return { kind: 'file', size: v.size, mode: 0o444, uid: this.owner.uid, gid: this.owner.gid, mtimeMs: v.lastModified.getTime() };
  }

  async enumerate(p: VersionsPath): Promise<DirEntry[]> {
    if ((await this.versioning()) === 'Off') {
      if (p.name !== undefined) throw new FsError(E.ENOENT, 'readdir', p.dir);
      return [{ name: VERSIONING_OFF, info: (await this.info({ dir: p.dir, name: VERSIONING_OFF }))! }];
    }
    if (p.name === undefined) {
      // The files of the directory that have versions (including deleted ones: their past is here).
      const prefix = p.dir === '/' ? '' : `${p.dir.slice(1)}/`;
      const { versions } = await this.storage.versions!.listVersions(prefix, { delimiter: '/' });
      const names = new Set(versions.filter((v) => !v.deleteMarker && v.key.length > prefix.length).map((v) => v.key.slice(prefix.length)));
      return [...names].map((name) => ({ name, info: this.dirInfo() }));
    }
    const out: DirEntry[] = [];
    for (const [name, v] of versionNames(await this.versionsOf(this.keyOf(p)))) {
      out.push({ name, info: { kind: 'file', size: v.size, mode: 0o444, uid: this.owner.uid, gid: this.owner.gid, mtimeMs: v.lastModified.getTime() } });
    }
    if (!out.length) throw new FsError(E.ENOENT, 'readdir', `${p.dir}/${VERSIONS_DIR}/${p.name}`);
    return out;
  }

  async open(p: VersionsPath, handle: number): Promise<void> {
    if ((await this.versioning()) === 'Off' && p.name === VERSIONING_OFF) {
      this.handles.set(handle, { key: '', versionId: '', size: this.offText().length });
      return;
    }
    const v = p.stamp === undefined ? undefined : versionNames(await this.versionsOf(this.keyOf(p))).get(p.stamp);
    if (!v) throw new FsError(E.ENOENT, 'open', `${p.dir}/${VERSIONS_DIR}/${p.name}/${p.stamp}`);
    this.handles.set(handle, { key: v.key, versionId: v.versionId, size: v.size });
  }

  owns(handle: number): boolean {
    return this.handles.has(handle);
  }

  async read(handle: number, offset: number, length: number): Promise<Buffer> {
    const h = this.handles.get(handle)!;
    if (h.key === '') return this.offText().subarray(offset, offset + length);
    const end = Math.min(h.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    return (await this.storage.versions!.readVersion(h.key, h.versionId, offset, end - offset)).data;
  }

  close(handle: number): void {
    this.handles.delete(handle);
  }
}

