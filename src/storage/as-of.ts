/**
 * A point-in-time view of a versioned bucket (`--as-of`): every object as it was at one instant — the newest
 * version not newer than it; a delete marker hides the key — through ListObjectVersions and versioned GETs.
 * Read-only. An object's ETag here is `v:<versionId>`, so the vault keys cached data by version: views at
 * different instants (or the live bucket) never mistake one version's blocks for another's.
 */
import type { ByteSource, Listing, ListOptions, ObjectInfo, ObjectMeta, ObjectVersion, ReadResult, StorageDriver, VersionedStorage, WriteResult } from './driver.js';
import { RWRESULT, StorageError } from './rwresult.js';

const VERSION_TAG = 'v:';

export function versionEtag(versionId: string): string {
  return VERSION_TAG + versionId;
}

/** Of one key's versions (newest first), the one visible at `at`: null if none yet or a delete marker. */
export function visibleAt(versions: ObjectVersion[], at: number): ObjectVersion | null {
  const v = versions.find((x) => x.lastModified.getTime() <= at);
  return v && !v.deleteMarker ? v : null;
}

function groupByKey(versions: ObjectVersion[]): Map<string, ObjectVersion[]> {
  const out = new Map<string, ObjectVersion[]>();
  for (const v of versions) {
    const list = out.get(v.key);
    if (list) list.push(v);
    else out.set(v.key, [v]);
  }
  return out;
}

export class AsOfStorage implements StorageDriver {
  readonly description: string;
  private readonly at: number;
  private readonly v: VersionedStorage;

  constructor(
    private readonly inner: StorageDriver,
    at: Date,
  ) {
    if (!inner.versions) throw new Error(`${inner.description} has no object versions`);
    this.v = inner.versions;
    this.at = at.getTime();
    this.description = `${inner.description} as of ${at.toISOString()}`;
  }

  get versions(): VersionedStorage {
    return this.v;
  }

  private readOnly(op: string, key: string): never {
    throw new StorageError(RWRESULT.FILE_FAILURE, op, key, 'a point-in-time view is read-only');
  }

  async probe(): Promise<void> {
    await this.inner.probe();
    const state = await this.v.versioning();
    if (state === 'Off') throw new StorageError(RWRESULT.PERMANENT_FAILURE, 'probe', undefined, `versioning is not enabled on ${this.inner.description}: there are no earlier versions to show (--as-of needs a versioned bucket)`);
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const { versions } = await this.v.listVersions(key, { onlyKey: key });
    const found = visibleAt(versions, this.at);
    if (!found) return null;
    const head = await this.v.headVersion(key, found.versionId);
    return head && { ...head, etag: versionEtag(found.versionId), lastModified: found.lastModified };
  }

  async read(key: string, offset: number, length: number, etag?: string): Promise<ReadResult> {
    let versionId = etag?.startsWith(VERSION_TAG) ? etag.slice(VERSION_TAG.length) : undefined;
    if (versionId === undefined) {
      const found = visibleAt((await this.v.listVersions(key, { onlyKey: key })).versions, this.at);
      if (!found) throw new StorageError(RWRESULT.FILE_FAILURE, 'read', key, 'no version at that time');
      versionId = found.versionId;
    }
    return this.v.readVersion(key, versionId, offset, length);
  }

  /** Is any key under the prefix visible at the instant? (A prefix listed by ListObjectVersions may hold only the past or the future.) */
  private async anyVisibleUnder(prefix: string): Promise<boolean> {
    const { versions } = await this.v.listVersions(prefix);
    for (const list of groupByKey(versions).values()) if (visibleAt(list, this.at)) return true;
    return false;
  }

  async list(prefix: string, options: ListOptions = {}): Promise<Listing> {
    const { versions, prefixes } = await this.v.listVersions(prefix, { delimiter: options.delimiter });
    const listing: Listing = { objects: [], prefixes: [] };
    for (const [key, list] of groupByKey(versions)) {
      const v = visibleAt(list, this.at);
      if (v) listing.objects.push({ key, size: v.size, etag: versionEtag(v.versionId), lastModified: v.lastModified });
    }
    for (const p of prefixes) if (await this.anyVisibleUnder(p)) listing.prefixes.push(p);
    if (options.maxKeys !== undefined) {
      listing.objects = listing.objects.slice(0, options.maxKeys);
      listing.prefixes = listing.prefixes.slice(0, Math.max(0, options.maxKeys - listing.objects.length));
    }
    return listing;
  }

  write(key: string, _size: number, _source: ByteSource): Promise<WriteResult> {
    return this.readOnly('write', key);
  }
  copy(fromKey: string, _toKey: string, _meta?: ObjectMeta): Promise<{ etag: string }> {
    return this.readOnly('copy', fromKey);
  }
  delete(key: string): Promise<void> {
    return this.readOnly('delete', key);
  }
  deleteMany(keys: string[]): Promise<void> {
    return this.readOnly('delete', keys[0] ?? '');
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
