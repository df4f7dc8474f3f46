/** The mirror's CBFS handlers on in-memory storage, with no mount: namespace rules and what reaches storage. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Vault, type VaultOptions } from '../../src/cache/vault.js';
import { objectMetaFor } from '../../src/fs/mirror/meta.js';
import { S3Mirror } from '../../src/fs/mirror/mirror.js';
import { RENAME_NOREPLACE } from '../../src/fs/cbfs/events.js';
import { E } from '../../src/fs/errors.js';
import { silentLogger } from '../../src/log.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { FaultyStorage } from '../../src/storage/faulty.js';
import { PoweredStorage } from '../../src/storage/power.js';
import { RWRESULT, StorageError } from '../../src/storage/rwresult.js';

const caller = { uid: 1000, gid: 1000, pid: 1 };
let dir: string;
let storage: MemoryStorage;
let vault: Vault;
let fs: S3Mirror;

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-mirror-'));
  storage = new MemoryStorage();
  vault = await Vault.open({ dir, storage, objectMeta: objectMetaFor });
  fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
});
afterEach(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Makes each call of `method` take 5 ms and records how many ran at once at most. */
function overlapOf(target: MemoryStorage, method: 'copy' | 'write'): { most: number } {
  const seen = { most: 0 };
  let running = 0;
  const inner = (target[method] as (...a: unknown[]) => Promise<unknown>).bind(target);
  (target as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
    seen.most = Math.max(seen.most, ++running);
    await new Promise((r) => setTimeout(r, 5));
    running--;
    return inner(...args);
  };
  return seen;
}

/** A promise and its resolve (Promise.withResolvers, Node 22). */
function resolvable(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * The vault and the mirror opened again (after `vault.close()`) over a FaultyStorage of the same bucket, reachable
 * or not from the start: a restart, or a storage that fails on demand.
 */
async function reopenOver(options: Partial<VaultOptions> = {}, reachable = true): Promise<FaultyStorage> {
  const faulty = new FaultyStorage(storage);
  faulty.reachable(reachable);
  vault = await Vault.open({ dir, storage: faulty, objectMeta: objectMetaFor, ...options });
  fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
  return faulty;
}

/**
 * The same over a PoweredStorage (the mount's wrapper): storage goes offline on a failure, as in a mount, and the
 * next probe is a minute away.
 */
async function reopenPowered(): Promise<{ faulty: FaultyStorage; powered: PoweredStorage }> {
  const faulty = new FaultyStorage(storage);
  const powered = new PoweredStorage(faulty, { probeMs: 60_000, maxProbeMs: 60_000 });
  vault = await Vault.open({ dir, storage: powered, objectMeta: objectMetaFor });
  fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
  return { faulty, powered };
}

/** Its directories first, as the kernel looks each one up (a name is made only in a directory that exists). */
async function mkdirs(p: string): Promise<void> {
  const parts = p.split('/').slice(1, -1);
  for (let i = 1; i <= parts.length; i++) {
    const dir = `/${parts.slice(0, i).join('/')}`;
    if (!(await fs.getFileInfo(dir))) await fs.createDirectory(dir, 0o755, caller);
  }
}

async function writeFile(p: string, text: string): Promise<void> {
  await mkdirs(p);
  const { handle } = await fs.createFile(p, 0o644, 0o1, caller);
  await fs.writeFile(handle, 0, Buffer.from(text));
  await fs.cleanupFile(handle);
  await fs.closeFile(handle);
  await vault.flushAll(); // what the write-back queue does after its delay
}

describe('mirror: namespace', () => {
  it('a directory is a common prefix or a marker; files show under it', async () => {
    storage.putObject('implicit/a.txt', 'a');
    storage.putObject('marked/', '');
    expect((await fs.getFileInfo('/implicit'))?.kind).toBe('dir');
    expect((await fs.getFileInfo('/marked'))?.kind).toBe('dir');
    expect((await fs.getFileInfo('/implicit/a.txt'))?.size).toBe(1);
    expect(await fs.getFileInfo('/missing')).toBeNull();
    const names = (await fs.enumerateDirectory('/')).map((e) => `${e.name}:${e.info.kind}`).sort();
    expect(names).toEqual(['implicit:dir', 'marked:dir']);
    expect((await fs.enumerateDirectory('/marked')).length).toBe(0);
  });

  it('a name missing from a fresh listing is known absent without a request; changes keep the listing true', async () => {
    storage.putObject('here.txt', 'x');
    await fs.enumerateDirectory('/');
    const heads = storage.calls.head ?? 0;
    const lists = storage.calls.list ?? 0;
    expect(await fs.getFileInfo('/absent.txt')).toBeNull();
    await fs.createDirectory('/newdir', 0o755, caller);
    expect(await fs.getFileInfo('/newdir/inside')).toBeNull();
    expect([storage.calls.head ?? 0, storage.calls.list ?? 0]).toEqual([heads, lists]);
    expect((await fs.getFileInfo('/newdir'))?.kind).toBe('dir');
    await writeFile('/absent.txt', 'now here');
    expect((await fs.getFileInfo('/absent.txt'))?.size).toBe(8);
  });

  it('the first two look-ups in a directory not listed yet ask for their names alone; the third lists the directory for the rest', async () => {
    for (let i = 0; i < 50; i++) storage.putObject(`big/f${i}`, 'x');
    const lists: string[] = [];
    const list = storage.list.bind(storage);
    storage.list = (prefix, options) => {
      lists.push(`${prefix}:${options?.maxKeys ?? 'all'}`);
      return list(prefix, options);
    };
    // `mv /big/f1 ...`: the root and big/ hold one name each that is looked up: no listing of either.
    expect((await fs.getFileInfo('/big'))?.kind).toBe('dir');
    expect((await fs.getFileInfo('/big/f1'))?.size).toBe(1);
    expect(lists).toEqual(['big/:1', 'big/f1/:1']);
    // `mv /big/f1 /big/f1.old`: the second name too.
    expect(await fs.getFileInfo('/big/f1.old')).toBeNull();
    expect(lists).toEqual(['big/:1', 'big/f1/:1', 'big/f1.old/:1']);
    // A walk over big/ (`stat big/*`): the third name lists it, and the listing answers the rest.
    lists.length = 0;
    expect((await fs.getFileInfo('/big/f2'))?.size).toBe(1);
    expect(lists).toEqual(['big/:10001']);
    const heads = storage.calls.head ?? 0;
    expect(await fs.getFileInfo('/big/none')).toBeNull();
    for (let i = 3; i < 10; i++) expect((await fs.getFileInfo(`/big/f${i}`))?.size).toBe(1);
    expect(lists).toEqual(['big/:10001']);
    expect(storage.calls.head ?? 0).toBeLessThanOrEqual(heads + 7);
  });

  it('a walk meets the listing page by page: a name the pages have passed is answered before the rest of the directory comes', async () => {
    const names = Array.from({ length: 2500 }, (_, i) => `f${String(i).padStart(4, '0')}`);
    for (const n of names) storage.putObject(`big/${n}`, 'x');
    // Pages of 1000 keys (the memory driver's, as S3's); the second waits until the test lets it go.
    const second = resolvable();
    const list = storage.list.bind(storage);
    storage.list = (prefix, options) => {
      const onPage = options?.onPage;
      if (!onPage) return list(prefix, options);
      let n = 0;
      return list(prefix, { ...options, onPage: async (page) => (++n === 2 && (await second.promise), onPage(page)) });
    };
    expect((await fs.getFileInfo('/big/f0000'))?.size).toBe(1);
    expect((await fs.getFileInfo('/big/f0001'))?.size).toBe(1);
    // The third look-up starts the listing; the first page decides it, and every name up to f0999.
    const third = await Promise.race([fs.getFileInfo('/big/f0002'), new Promise((r) => setTimeout(() => r('still waiting for the whole listing'), 2000))]);
    expect((third as { size: number } | null)?.size).toBe(1);
    expect((await fs.getFileInfo('/big/f0500'))?.size).toBe(1);
    expect(await fs.getFileInfo('/big/f0500.old')).toBeNull(); // passed by the page, not in it: absent, no request
    // Past the first page: it waits for the rest of the listing.
    let late: unknown = 'pending';
    const past = fs.getFileInfo('/big/f2400').then((i) => (late = i));
    await new Promise((r) => setTimeout(r, 20));
    expect(late).toBe('pending');
    second.resolve();
    await past;
    expect((late as { size: number } | null)?.size).toBe(1);
    expect(await fs.getFileInfo('/big/f9999')).toBeNull();
  });

  it('a look-up listing asks for its pages as the look-ups need them, and a paused one is dropped when it grows old', async () => {
    const names = Array.from({ length: 3500 }, (_, i) => `f${String(i).padStart(4, '0')}`);
    for (const n of names) storage.putObject(`big/${n}`, 'x');
    fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 }, listingTtlMs: 400 });
    const pages = () => storage.calls.listPage ?? 0;
    for (const n of ['f0000', 'f0001', 'f0002', 'f0500']) expect((await fs.getFileInfo(`/big/${n}`))?.size).toBe(1);
    expect(await fs.getFileInfo('/big/f0500.old')).toBeNull();
    // The third look-up listed the directory: one page, and it waits there.
    await new Promise((r) => setTimeout(r, 30));
    expect(pages()).toBe(1);
    // A walk near the end of the pages so far: the next page comes while it goes on.
    expect((await fs.getFileInfo('/big/f0950'))?.size).toBe(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(pages()).toBe(2);
    // A name past the pages: as many as it takes, and no more.
    expect((await fs.getFileInfo('/big/f2500'))?.size).toBe(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(pages()).toBe(3);
    const heads = storage.calls.head ?? 0;
    expect(await fs.getFileInfo('/big/f2500.old')).toBeNull();
    expect(storage.calls.head ?? 0).toBe(heads);
    // Paused past the listing's lifetime, it is dropped: the names it decided are asked of storage again.
    await new Promise((r) => setTimeout(r, 450));
    expect(await fs.getFileInfo('/big/f2500.new')).toBeNull();
    expect(storage.calls.head ?? 0).toBeGreaterThan(heads);
    expect(pages()).toBe(3);
    // readdir takes the whole listing (its own), whatever a look-up listing had.
    expect((await fs.enumerateDirectory('/big')).length).toBe(3500);
  });

  it('a directory renamed while a look-up listing of its parent is paused is gone from its old name, there at its new one', async () => {
    for (let i = 0; i < 2500; i++) storage.putObject(`big/f${String(i).padStart(4, '0')}`, 'x');
    storage.putObject('big/d/inner', 'x');
    for (const n of ['f0000', 'f0001', 'f0002']) expect((await fs.getFileInfo(`/big/${n}`))?.size).toBe(1);
    await new Promise((r) => setTimeout(r, 30));
    // Paused after its first page, which has passed d/ (and e/, not there then).
    expect(storage.calls.listPage).toBe(1);
    expect((await fs.getFileInfo('/big/d'))?.kind).toBe('dir');
    expect(await fs.getFileInfo('/big/e')).toBeNull();
    await fs.renameOrMoveFile('/big/d', '/big/e', 0);
    expect(await fs.getFileInfo('/big/d')).toBeNull();
    expect((await fs.getFileInfo('/big/e'))?.kind).toBe('dir');
    expect((await fs.getFileInfo('/big/e/inner'))?.size).toBe(1);
  });

  it('a non-ASCII name takes every page of a look-up listing, which is then stored', async () => {
    const names = Array.from({ length: 3500 }, (_, i) => `f${String(i).padStart(4, '0')}`);
    for (const n of names) storage.putObject(`big/${n}`, 'x');
    storage.putObject('big/é', 'x');
    for (const n of ['f0000', 'f0001', 'f0002']) expect((await fs.getFileInfo(`/big/${n}`))?.size).toBe(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(storage.calls.listPage).toBe(1);
    // Non-ASCII: only the whole listing decides it.
    expect((await fs.getFileInfo('/big/é'))?.size).toBe(1);
    expect(storage.calls.listPage).toBe(4);
    // Stored now: a look-up is answered without a request.
    const requests = (storage.calls.head ?? 0) + (storage.calls.list ?? 0);
    expect(await fs.getFileInfo('/big/none')).toBeNull();
    expect((storage.calls.head ?? 0) + (storage.calls.list ?? 0)).toBe(requests);
  });

  it('a look-up listing paused in a directory gives way to readdir, which takes every page itself', async () => {
    for (let i = 0; i < 2500; i++) storage.putObject(`big/f${String(i).padStart(4, '0')}`, 'x');
    for (const n of ['f0000', 'f0001', 'f0002']) expect((await fs.getFileInfo(`/big/${n}`))?.size).toBe(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(storage.calls.listPage).toBe(1);
    const lists = storage.calls.list ?? 0;
    expect((await fs.enumerateDirectory('/big')).length).toBe(2500);
    expect(storage.calls.list).toBe(lists + 1);
    // Answered by readdir's listing, no request.
    const heads = storage.calls.head ?? 0;
    expect(await fs.getFileInfo('/big/f2400.old')).toBeNull();
    expect(storage.calls.head ?? 0).toBe(heads);
    // The paused listing stopped rather than waited on: once readdir's is forgotten, a name past its page is asked of
    // storage alone, not of the old listing's next pages.
    fs.refresh('/big');
    expect(await fs.getFileInfo('/big/f2401.old')).toBeNull();
    await new Promise((r) => setTimeout(r, 30));
    expect(storage.calls.listPage).toBe(1);
    expect(storage.calls.head ?? 0).toBe(heads + 1);
  });

  it('listings are kept in the vault: a warm listing, even after a remount, needs no request until it ages out', async () => {
    for (let i = 0; i < 50; i++) storage.putObject(`dir/f${i}`, 'x');
    expect((await fs.enumerateDirectory('/dir')).length).toBe(50);
    const lists = storage.calls.list ?? 0;
    await vault.close();
    vault = await Vault.open({ dir, storage });
    fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 }, listingTtlMs: 300 });
    await fs.mount(); // what a mount does first (finish interrupted renames) keeps the listings
    expect((await fs.enumerateDirectory('/dir')).length).toBe(50);
    expect(await fs.getFileInfo('/dir/none')).toBeNull();
    expect(storage.calls.list ?? 0).toBe(lists);
    storage.putObject('dir/late', 'x');
    await new Promise((r) => setTimeout(r, 350));
    expect((await fs.enumerateDirectory('/dir')).length).toBe(51);
    expect(storage.calls.list).toBe(lists + 1);
  });

  it('a created file is listed before it is uploaded; close makes it durable; the write-back queue uploads it with its metadata', async () => {
    const { handle } = await fs.createFile('/new.txt', 0o600, 0o1, caller);
    await fs.writeFile(handle, 0, Buffer.from('hi'));
    expect((await fs.enumerateDirectory('/')).map((e) => e.name)).toEqual(['new.txt']);
    await fs.cleanupFile(handle);
    await fs.closeFile(handle);
    expect(storage.objects.has('new.txt')).toBe(false); // FlushAfterCloseDelay (2 s) has not passed
    expect(vault.queue().map((q) => q.key)).toEqual(['new.txt']);
    await vault.flushAll();
    const o = storage.objects.get('new.txt')!;
    expect(o.data.toString()).toBe('hi');
    expect(Number(o.meta.mode) & 0o7777).toBe(0o600);
    expect(o.meta.uid).toBe('1000');
    expect((await fs.getFileInfo('/new.txt'))?.size).toBe(2);
    expect(vault.queue()).toEqual([]);
  });

  it('a listing answered before an upload landed (or a delete) keeps what changed meanwhile: nothing hidden, nothing back', async () => {
    storage.putObject('d/old', 'x');
    storage.putObject('d/gone', 'x');
    const { handle } = await fs.createFile('/d/new', 0o644, 0o1, caller);
    await fs.writeFile(handle, 0, Buffer.from('new'));
    await fs.cleanupFile(handle);
    await fs.closeFile(handle);
    fs.refresh('/d'); // the next readdir asks storage
    // The server answers the LIST now (without d/new, with d/gone), but the answer arrives late.
    let answer!: () => void;
    const late = new Promise<void>((r) => (answer = r));
    const list = storage.list.bind(storage);
    storage.list = async (...args) => {
      storage.list = list; // only this LIST is slow
      const listing = await list(...args);
      await late;
      return listing;
    };
    const listing = fs.enumerateDirectory('/d');
    await new Promise((r) => setImmediate(r));
    await vault.flushAll(); // d/new lands: its record is clean now, only the listing can show it
    await fs.deleteFile('/d/gone');
    await vault.sendDeletes(); // its journaled delete lands too, while the LIST is still on its way
    expect(storage.objects.has('d/new') && !storage.objects.has('d/gone')).toBe(true);
    answer();
    expect((await listing).map((e) => e.name).sort()).toEqual(['new', 'old']);
    expect((await fs.enumerateDirectory('/d')).map((e) => e.name).sort()).toEqual(['new', 'old']);
    expect(await fs.getFileInfo('/d/gone')).toBeNull();
  });

  it('rmdir refuses a non-empty directory (ENOTEMPTY) and removes an empty one', async () => {
    await fs.createDirectory('/d', 0o755, caller);
    await writeFile('/d/f', 'x');
    await expect(fs.deleteDirectory('/d')).rejects.toMatchObject({ errno: 39 });
    await fs.deleteFile('/d/f');
    await fs.deleteDirectory('/d');
    expect(await fs.getFileInfo('/d')).toBeNull();
    await vault.sendDeletes(); // the file's and the marker's deletes, journaled
    expect(storage.objects.size).toBe(0);
  });

  it('mkdir journals its marker: nothing is sent until the write-back uploads it, with the attributes set meanwhile', async () => {
    await fs.enumerateDirectory('/');
    const writes = storage.calls.write ?? 0;
    await fs.createDirectory('/made', 0o755, caller);
    await fs.createDirectory('/made/deeper', 0o700, caller);
    await fs.setFileAttributes('/made', { mode: 0o40750, mtimeMs: 1_577_836_800_000 });
    expect([storage.calls.write ?? 0, storage.calls.copy ?? 0, storage.objects.size]).toEqual([writes, 0, 0]);
    expect(await fs.getFileInfo('/made')).toMatchObject({ kind: 'dir', mode: 0o750, uid: caller.uid, mtimeMs: 1_577_836_800_000 });
    expect(await fs.createDirectory('/made', 0o755, caller).catch((e: { errno: number }) => e.errno)).toBe(17);
    // Once what the mount learnt is forgotten (storage has nothing there yet), the vault's markers still answer.
    fs.refresh('/');
    expect(await fs.getFileInfo('/made/deeper')).toMatchObject({ kind: 'dir', mode: 0o700 });
    expect((await fs.enumerateDirectory('/')).map((e) => `${e.name}:${e.info.kind}:${e.info.mode.toString(8)}`)).toEqual(['made:dir:750']);
    expect((await fs.enumerateDirectory('/made')).map((e) => `${e.name}:${e.info.kind}`)).toEqual(['deeper:dir']);
    await vault.flushAll();
    expect([...storage.objects.keys()].sort()).toEqual(['made/', 'made/deeper/']);
    expect(storage.calls.write! - writes).toBe(2);
    const made = storage.objects.get('made/')!;
    expect([made.meta.mode, made.meta.mtime, made.contentType, made.data.length]).toEqual([String(0o40750), '1577836800', 'application/x-directory', 0]);
    expect(storage.objects.get('made/deeper/')!.meta.mode).toBe(String(0o40700));
    // Uploaded: a change is written to the marker at once, as for any directory.
    await fs.setFileAttributes('/made/deeper', { mode: 0o40755 });
    expect(storage.objects.get('made/deeper/')!.meta.mode).toBe(String(0o40755));
  });

  it("a marker another client put meanwhile is overwritten with this mkdir's attributes: not adopted, no conflict copy", async () => {
    await fs.createDirectory('/r', 0o750, caller);
    storage.putObject('r/', '', { mode: String(0o40700), uid: '7' });
    await vault.flushAll();
    expect([...storage.objects.keys()]).toEqual(['r/']);
    expect(storage.objects.get('r/')!.meta).toMatchObject({ mode: String(0o40750), uid: String(caller.uid) });
  });

  it('rmdir of a directory whose marker was never uploaded sends nothing; a removed file leaves its directory empty', async () => {
    await fs.createDirectory('/tmp', 0o755, caller);
    await fs.createDirectory('/tmp/sub', 0o755, caller);
    await expect(fs.deleteDirectory('/tmp')).rejects.toMatchObject({ errno: 39 });
    const deletes = storage.calls.delete ?? 0;
    await fs.deleteDirectory('/tmp/sub');
    await fs.deleteDirectory('/tmp');
    expect(storage.calls.delete ?? 0).toBe(deletes);
    await vault.flushAll();
    expect(storage.objects.size).toBe(0);
    expect(await fs.getFileInfo('/tmp')).toBeNull();
    expect(await fs.enumerateDirectory('/')).toEqual([]);
  });

  it('a mkdir survives a crash before its upload, and one made while storage is unreachable goes up when it is back', async () => {
    await fs.createDirectory('/kept', 0o711, caller);
    await vault.close(); // the "crash": nothing uploaded
    const faulty = await reopenOver();
    expect(vault.orphans.map((r) => r.key)).toEqual(['kept/']);
    expect(await fs.getFileInfo('/kept')).toMatchObject({ kind: 'dir', mode: 0o711 });
    faulty.reachable(false);
    await fs.createDirectory('/kept/offline', 0o755, caller);
    expect((await fs.getFileInfo('/kept/offline'))?.kind).toBe('dir');
    expect(storage.objects.size).toBe(0);
    faulty.reachable(true);
    await vault.flushAll();
    expect([...storage.objects.keys()].sort()).toEqual(['kept/', 'kept/offline/']);
    expect(storage.objects.get('kept/')!.meta.mode).toBe(String(0o40711));
  });

  it('symlink journals the link: nothing is sent, readlink and listings answer from the vault (offline and after a restart too); the upload is an s3fs symlink object', async () => {
    await fs.enumerateDirectory('/');
    const writes = storage.calls.write ?? 0;
    const info = await fs.createSymlink('/l', '../target/file', caller);
    expect(info).toMatchObject({ kind: 'symlink', size: 14, mode: 0o777, uid: caller.uid });
    expect([storage.calls.write ?? 0, storage.objects.size]).toEqual([writes, 0]);
    expect(await fs.readSymlink('/l')).toBe('../target/file');
    expect((await fs.enumerateDirectory('/')).map((e) => `${e.name}:${e.info.kind}`)).toEqual(['l:symlink']);
    await fs.setFileAttributes('/l', { uid: 7, mtimeMs: 1_600_000_000_000 }); // lchown, touch -h: the record takes them
    expect(storage.calls.copy ?? 0).toBe(0);
    // Stopped before the upload, restarted with the storage unreachable: still a link, still readable, and more can be made.
    await vault.close();
    const faulty = await reopenOver({}, false);
    expect(await fs.getFileInfo('/l')).toMatchObject({ kind: 'symlink', uid: 7, mtimeMs: 1_600_000_000_000 });
    expect(await fs.readSymlink('/l')).toBe('../target/file');
    await fs.createSymlink('/offline', 'l', caller);
    faulty.reachable(true);
    await vault.flushAll();
    const o = storage.objects.get('l')!;
    expect([o.data.toString(), Number(o.meta.mode), o.meta.uid, o.meta.mtime]).toEqual(['../target/file', 0o120777, '7', '1600000000']);
    expect(storage.objects.get('offline')!.data.toString()).toBe('l');
    // Uploaded: another mount sees an s3fs symlink; this one still answers from its vault.
    const otherDir = mkdtempSync(path.join(os.tmpdir(), 's3vault-other-'));
    const otherVault = await Vault.open({ dir: otherDir, storage, objectMeta: objectMetaFor });
    const other = new S3Mirror({ vault: otherVault, log: silentLogger, owner: { uid: 0, gid: 0 } });
    expect(await other.getFileInfo('/l')).toMatchObject({ kind: 'symlink', size: 14 });
    expect(await other.readSymlink('/l')).toBe('../target/file');
    await otherVault.close();
    rmSync(otherDir, { recursive: true, force: true });
    fs.refresh('/');
    expect((await fs.enumerateDirectory('/')).map((e) => `${e.name}:${e.info.kind}`).sort()).toEqual(['l:symlink', 'offline:symlink']);
    expect(await fs.readSymlink('/offline')).toBe('l');
    // Replaced in storage by another client: its new target, not the vault's copy of the old one.
    storage.putObject('l', 'elsewhere', { mode: String(0o120777) });
    fs.refresh('/');
    expect(await fs.readSymlink('/l')).toBe('elsewhere');
  });

  it('unlink journals the delete: nothing is sent at once, the name is gone everywhere, and one DeleteObjects takes them all', async () => {
    for (let i = 0; i < 5; i++) storage.putObject(`d/f${i}`, 'x');
    storage.putObject('d/kept', 'x');
    expect((await fs.enumerateDirectory('/d')).length).toBe(6);
    const sent = { ...storage.calls };
    for (let i = 0; i < 5; i++) await fs.deleteFile(`/d/f${i}`);
    expect([storage.calls.delete, storage.calls.deleteMany, storage.objects.size]).toEqual([sent.delete, sent.deleteMany, 6]);
    expect(vault.pendingDeletes).toBe(5);
    expect(await fs.getFileInfo('/d/f0')).toBeNull();
    expect((await fs.enumerateDirectory('/d')).map((e) => e.name)).toEqual(['kept']);
    // Taken again from storage (which still has them): still hidden, in listings and look-ups.
    fs.refresh('/d');
    expect((await fs.enumerateDirectory('/d')).map((e) => e.name)).toEqual(['kept']);
    fs.refresh('/d');
    expect(await fs.getFileInfo('/d/f3')).toBeNull();
    await expect(fs.deleteFile('/d/f3')).rejects.toMatchObject({ errno: 2 });
    // rmdir (rm -r) sends nothing: its listing passes over the journaled keys and finds the one still there.
    await expect(fs.deleteDirectory('/d')).rejects.toMatchObject({ errno: 39 });
    expect([storage.calls.deleteMany, vault.pendingDeletes, storage.objects.size]).toEqual([sent.deleteMany, 5, 6]);
    await fs.deleteFile('/d/kept');
    await fs.deleteDirectory('/d');
    expect([storage.calls.deleteMany, storage.calls.delete, vault.pendingDeletes, storage.objects.size]).toEqual([sent.deleteMany, sent.delete, 7, 6]);
    await vault.sendDeletes();
    expect([storage.objects.size, storage.calls.deleteMany! - (sent.deleteMany ?? 0)]).toEqual([0, 1]);
  });

  it('a directory removed here whose marker delete is still journaled is gone to a look-up while storage is unreachable too', async () => {
    await vault.close();
    const faulty = await reopenOver({ deleteDelayMs: 60_000 });
    storage.putObject('gone/', '', { mode: String(0o40755) });
    expect(await fs.getFileInfo('/gone')).toMatchObject({ kind: 'dir' });
    await fs.deleteDirectory('/gone');
    faulty.reachable(false);
    fs.refresh('/');
    expect(await fs.getFileInfo('/gone')).toBeNull();
    faulty.reachable(true);
    expect(await fs.getFileInfo('/gone')).toBeNull();
  });

  it('rm -r of a tree: no request per directory but its listing; the removed directories stay hidden until their batch has gone', async () => {
    await vault.close();
    vault = await Vault.open({ dir, storage, objectMeta: objectMetaFor, deleteDelayMs: 60_000 }); // nothing sent but by asking
    fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
    for (const d of ['t/', 't/a/', 't/a/x/', 't/b/']) storage.putObject(d, '', { mode: String(0o40755) });
    for (const f of ['t/a/1', 't/a/2', 't/a/x/3', 't/b/4']) storage.putObject(f, f);
    storage.putObject('u', 'other');
    const sent = { ...storage.calls };
    // What rm -r does: depth first, each directory's files, then the directory.
    for (const f of ['/t/a/x/3']) await fs.deleteFile(f);
    await fs.deleteDirectory('/t/a/x');
    await expect(fs.deleteDirectory('/t/a')).rejects.toMatchObject({ errno: 39 }); // 1 and 2 are still there
    for (const f of ['/t/a/1', '/t/a/2']) await fs.deleteFile(f);
    await fs.deleteDirectory('/t/a');
    await fs.deleteFile('/t/b/4');
    await fs.deleteDirectory('/t/b');
    // Everything journaled, nothing deleted yet; storage still lists the whole tree.
    expect([storage.calls.delete, storage.calls.deleteMany, storage.objects.size, vault.pendingDeletes]).toEqual([sent.delete, sent.deleteMany, 9, 7]);
    // Listed again from storage and looked up after the caches forgot them: still gone.
    fs.refresh('/');
    expect((await fs.enumerateDirectory('/t')).map((e) => e.name)).toEqual([]);
    fs.refresh('/');
    expect([await fs.getFileInfo('/t/a'), await fs.getFileInfo('/t/a/x'), await fs.getFileInfo('/t/b')]).toEqual([null, null, null]);
    expect(await fs.getFileInfo('/t')).toMatchObject({ kind: 'dir' });
    // A directory made again where one was removed is there at once, and its marker goes after the delete.
    await fs.createDirectory('/t/b', 0o700, caller);
    expect((await fs.enumerateDirectory('/t')).map((e) => `${e.name}:${e.info.kind}`)).toEqual(['b:dir']);
    await fs.deleteDirectory('/t/b');
    // The batch gone, the listing kept from when storage still had the markers no longer shows them.
    await vault.sendDeletes();
    expect([storage.objects.has('t/a/'), (await fs.enumerateDirectory('/t')).map((e) => e.name)]).toEqual([false, []]);
    await fs.deleteDirectory('/t');
    await vault.sendDeletes();
    expect([[...storage.objects.keys()], storage.calls.delete, storage.calls.deleteMany! - (sent.deleteMany ?? 0)]).toEqual([['u'], sent.delete, 2]);
    fs.refresh('/');
    expect((await fs.enumerateDirectory('/')).map((e) => e.name)).toEqual(['u']);
  });

  it('a name removed and written again: the late delete never removes the new object (new file, rename, symlink, mkdir), and no conflict', async () => {
    await vault.close();
    vault = await Vault.open({ dir, storage, objectMeta: objectMetaFor, deleteDelayMs: 60_000 }); // nothing sent but by asking
    fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
    for (const n of ['a', 'b', 'c', 'l', 'm']) await writeFile(`/${n}`, `old ${n}`);
    await vault.flushAll();
    await fs.deleteFile('/a');
    const { handle } = await fs.createFile('/a', 0o644, 0o1, caller);
    await fs.writeFile(handle, 0, Buffer.from('new a'));
    await fs.closeFile(handle);
    await vault.flushFile('a'); // its upload, before the batch went: it sends the delete first
    expect([storage.objects.get('a')?.data.toString(), vault.pendingDeletes, vault.conflicts]).toEqual(['new a', 0, []]);
    for (const n of ['b', 'l', 'm']) await fs.deleteFile(`/${n}`);
    await fs.renameOrMoveFile('/c', '/b', 0); // a server-side copy now: the delete goes before it
    await fs.createSymlink('/l', 'target', caller);
    await fs.createDirectory('/m', 0o755, caller);
    await vault.flushAll();
    expect(vault.pendingDeletes).toBe(0);
    expect([...storage.objects.keys()].sort()).toEqual(['a', 'b', 'l', 'm/']);
    expect([storage.objects.get('a')!.data.toString(), storage.objects.get('b')!.data.toString()]).toEqual(['new a', 'old c']);
    expect(vault.conflicts).toEqual([]);
    expect((await fs.getFileInfo('/m'))?.kind).toBe('dir');
    expect(await fs.readSymlink('/l')).toBe('target');
  });

  it('a name is made only in a directory that exists: a request naming a directory that moved away is ENOENT', async () => {
    // The kernel may send a request resolved just before a move's end reached its inode table: it names the old
    // path. Before, it made the directory again in S3 (a marker, files) where no listing of this mount showed it.
    await fs.createDirectory('/x', 0o755, caller);
    await writeFile('/x/f', 'F');
    await fs.renameOrMoveFile('/x', '/d', 0);
    await expect(fs.createDirectory('/x/z', 0o755, caller)).rejects.toMatchObject({ errno: E.ENOENT });
    await expect(fs.createFile('/x/g', 0o644, 0o1, caller)).rejects.toMatchObject({ errno: E.ENOENT });
    await expect(fs.createSymlink('/x/l', 'f', caller)).rejects.toMatchObject({ errno: E.ENOENT });
    await expect(fs.renameOrMoveFile('/d/f', '/x/f', 0)).rejects.toMatchObject({ errno: E.ENOENT });
    await expect(fs.createFile('/d/f/g', 0o644, 0o1, caller)).rejects.toMatchObject({ errno: E.ENOTDIR });
    await vault.flushAll();
    expect([...storage.objects.keys()].sort()).toEqual(['d/', 'd/f']);
  });

  // Seen in the stress check: an open or readlink beside a move of its directory found the file's record gone
  // (moved meanwhile), made a new one at the old name, and read storage's object there, which the move had deleted:
  // EIO. Both now wait for the move like any change under it, and then apply where their path went.
  it.each([
    ['an open for reading', async () => {
      await writeFile('/x/c', 'C');
      return async (p: string) => {
        const h = await fs.openFile(p, 0);
        return async () => {
          const text = (await fs.readFile(h, 0, 1)).toString();
          await fs.closeFile(h);
          return text;
        };
      };
    }, 'C'],
    ['a readlink', async () => {
      await mkdirs('/x/c');
      await fs.createSymlink('/x/c', 'target', caller);
      await vault.flushAll();
      return async (p: string) => {
        const target = await fs.readSymlink(p);
        return async () => target;
      };
    }, 'target'],
  ] as const)('%s beside a move of its directory applies where the file went, never at the old name', async (_, setUp, expected) => {
    const run = await setUp();
    const real = vault.openFile.bind(vault);
    const entered = resolvable();
    const held = resolvable();
    vault.openFile = (async (...args: Parameters<typeof real>) => {
      entered.resolve();
      await held.promise; // as a slow load of the record would
      return real(...args);
    }) as typeof vault.openFile;
    const started = run('/x/c');
    await entered.promise;
    const moving = fs.renameOrMoveFile('/x', '/w', 0);
    // The move waits for it (a change under its name); before, the move ran to its end meanwhile.
    await Promise.race([moving, new Promise((r) => setTimeout(r, 50))]);
    held.resolve();
    const result = await started;
    await moving;
    vault.openFile = real;
    expect(await result()).toBe(expected);
    await vault.flushAll();
    expect([...storage.objects.keys()].sort()).toEqual(['w/', 'w/c']);
  });

  it('an open of a name a symbolic link holds is ENOENT: the kernel never opens links, so the file it meant lost the name', async () => {
    // Seen in the stress check: the open got a handle on the link's record, and a getattr answered from that handle
    // told the kernel its file inode was a link; the kernel then marked the inode bad (EIO to fstat).
    await fs.createSymlink('/l', 'target', caller);
    await expect(fs.openFile('/l', 0)).rejects.toMatchObject({ errno: E.ENOENT });
    await vault.flushAll();
    expect(vault.record('l')?.dirty).toBe(false); // uploaded: the open below finds it through storage's metadata
    await expect(fs.openFile('/l', 0)).rejects.toMatchObject({ errno: E.ENOENT });
  });

  it('a directory moved after files under it were removed does not bring them back', async () => {
    await writeFile('/m/x', 'X');
    await writeFile('/m/y', 'Y');
    await vault.flushAll();
    await fs.deleteFile('/m/x');
    await fs.renameOrMoveFile('/m', '/n', 0);
    expect([...storage.objects.keys()].sort()).toEqual(['n/', 'n/y']);
    expect((await fs.enumerateDirectory('/n')).map((e) => e.name)).toEqual(['y']);
  });

  it('journaled deletes survive a crash; unlink works offline; both go when storage is back; a refused delete shows the file again', async () => {
    for (const n of ['k', 'off', 'deny']) await writeFile(`/${n}`, n);
    await vault.flushAll();
    await fs.deleteFile('/k');
    await vault.close(); // the "crash": stopped before the delete went
    const faulty = await reopenOver({}, false);
    expect(vault.pendingDeletes).toBe(1);
    expect(await fs.getFileInfo('/k')).toBeNull();
    await fs.deleteFile('/off');
    expect(await fs.getFileInfo('/off')).toBeNull();
    expect([...storage.objects.keys()].sort()).toEqual(['deny', 'k', 'off']);
    faulty.reachable(true);
    await vault.flushAll();
    expect([...storage.objects.keys()]).toEqual(['deny']);
    faulty.failNext('delete', RWRESULT.FILE_FAILURE);
    await fs.deleteFile('/deny');
    await vault.flushAll();
    expect(vault.pendingDeletes).toBe(0);
    expect([...storage.objects.keys()]).toEqual(['deny']);
    fs.refresh('/');
    expect((await fs.getFileInfo('/deny'))?.size).toBe(4);
  });

  it('rename is a copy and a journaled delete; NOREPLACE refuses an existing target; a directory moves whole', async () => {
    await writeFile('/a', 'A');
    await writeFile('/b', 'B');
    await expect(fs.renameOrMoveFile('/a', '/b', RENAME_NOREPLACE)).rejects.toMatchObject({ errno: 17 });
    const deletes = [storage.calls.delete ?? 0, storage.calls.deleteMany ?? 0];
    await fs.renameOrMoveFile('/a', '/c', 0);
    // The rename waited for the copy alone; the old name is gone at once, its object once the delete is sent.
    expect([storage.calls.delete ?? 0, storage.calls.deleteMany ?? 0, vault.pendingDeletes]).toEqual([...deletes, 1]);
    expect([await fs.getFileInfo('/a'), (await fs.enumerateDirectory('/')).map((e) => e.name).sort()]).toEqual([null, ['b', 'c']]);
    await vault.sendDeletes();
    expect([...storage.objects.keys()].sort()).toEqual(['b', 'c']);
    // A file with changes not uploaded yet, renamed over another: both objects' deletes are journaled, and the
    // upload to the new name sends them first (no conflict with the replaced object).
    await writeFile('/p', 'P');
    await writeFile('/q', 'Q');
    const handle = await fs.openFile('/p', 2);
    await fs.writeFile(handle, 0, Buffer.from('P2'));
    await fs.closeFile(handle);
    await fs.renameOrMoveFile('/p', '/q', 0);
    expect(vault.pendingDeletes).toBe(2);
    await vault.flushFile('q');
    expect([storage.objects.has('p'), storage.objects.get('q')?.data.toString(), vault.pendingDeletes, vault.conflicts]).toEqual([false, 'P2', 0, []]);
    await fs.createDirectory('/dir', 0o755, caller);
    await writeFile('/dir/x', 'X');
    await fs.renameOrMoveFile('/dir', '/moved', 0);
    expect([...storage.objects.keys()].sort()).toEqual(['b', 'c', 'moved/', 'moved/x', 'q']);
    expect((await fs.getFileInfo('/moved/x'))?.size).toBe(1);
    await expect(fs.renameOrMoveFile('/moved', '/moved/inside', 0)).rejects.toMatchObject({ errno: 22 });
  });

  /**
   * The next copy copies the object as it is when it begins, and answers once `gate` resolves. The copy gets a new
   * ETag, as S3 gives a multipart object's copy (the source's ETag is its parts' digest). Returns a promise that
   * resolves when the copy has begun.
   */
  function pauseNextCopy(gate: Promise<void>): Promise<void> {
    const inner = storage.copy.bind(storage);
    const begun = resolvable();
    storage.copy = async (fromKey, toKey, ...rest) => {
      storage.copy = inner;
      await inner(fromKey, toKey, ...rest);
      const copied = storage.objects.get(toKey)!;
      copied.etag = `${copied.etag}-copy`;
      begun.resolve();
      await gate;
      return { etag: copied.etag };
    };
    return begun.promise;
  }

  it('a file written through an open handle while its rename copies it is uploaded to the new name, based on the copy: no conflict', async () => {
    await writeFile('/w', 'old bytes');
    const handle = await fs.openFile('/w', 2);
    const gate = resolvable();
    const begun = pauseNextCopy(gate.promise);
    const renaming = fs.renameOrMoveFile('/w', '/w2', 0);
    await begun;
    await fs.writeFile(handle, 0, Buffer.from('NEW'));
    gate.resolve();
    await renaming;
    await fs.closeFile(handle);
    await vault.flushAll();
    // Before: the record stayed based on the source's ETag, and its upload met the copy's as another writer's.
    expect([vault.conflicts, storage.objects.get('w2')?.data.toString(), storage.objects.has('w')]).toEqual([[], 'NEW bytes', false]);
  });

  it('an upload asked for while a rename copies the file waits for the rename, and goes to the new name', async () => {
    await writeFile('/u', 'old bytes');
    const gate = resolvable();
    const begun = pauseNextCopy(gate.promise);
    const renaming = fs.renameOrMoveFile('/u', '/u2', 0);
    await begun;
    // Changed and closed during the copy, and its upload asked for at once (fsync with --sync remote, a flush).
    const handle = await fs.openFile('/u', 2);
    await fs.writeFile(handle, 0, Buffer.from('NEW'));
    await fs.closeFile(handle);
    const flushing = vault.flushAll();
    await new Promise((r) => setTimeout(r, 20));
    gate.resolve();
    await renaming;
    await flushing;
    await vault.flushAll();
    await vault.sendDeletes();
    // Before: the upload landed under the old name (then deleted), and the record, taking it for its base, was
    // clean: the new name kept the old bytes.
    expect([storage.objects.get('u2')?.data.toString(), storage.objects.has('u'), vault.conflicts]).toEqual(['NEW bytes', false, []]);
  });

  it('a file the vault holds whole is renamed while storage is unreachable: it moves as a changed file, and goes up under its new name once storage is back', async () => {
    await vault.close();
    const faulty = await reopenOver();
    await writeFile('/r', 'data');
    storage.putObject('elsewhere', 'not in the vault');
    expect((await fs.getFileInfo('/elsewhere'))?.size).toBe(16);
    faulty.reachable(false);
    await fs.renameOrMoveFile('/r', '/r2', 0);
    expect([await fs.getFileInfo('/r'), (await fs.getFileInfo('/r2'))?.size]).toEqual([null, 4]);
    const h = await fs.openFile('/r2', 0);
    expect((await fs.readFile(h, 0, 10)).toString()).toBe('data');
    await fs.closeFile(h);
    // A file whose bytes are in storage only cannot move without it.
    await expect(fs.renameOrMoveFile('/elsewhere', '/moved', 0)).rejects.toMatchObject({ errno: E.EIO });
    expect([...storage.objects.keys()].sort()).toEqual(['elsewhere', 'r']);
    faulty.reachable(true);
    await vault.flushAll();
    expect([...storage.objects.keys()].sort()).toEqual(['elsewhere', 'r2']);
    expect([storage.objects.get('r2')?.data.toString(), vault.conflicts]).toEqual(['data', []]);
  });

  it('a rename whose copy landed but whose answer was lost: nothing is left under the new name if it failed, nor under a name the file moved on from', async () => {
    const loseNextCopyAnswer = (): void => {
      const inner = storage.copy.bind(storage);
      storage.copy = async (fromKey, ...rest) => {
        storage.copy = inner;
        await inner(fromKey, ...rest);
        throw new StorageError(RWRESULT.FAILURE, 'copy', fromKey, 'connection reset (the answer was lost)');
      };
    };
    storage.putObject('e', 'in storage only');
    expect((await fs.getFileInfo('/e'))?.size).toBe(15);
    await writeFile('/c', 'data');
    loseNextCopyAnswer();
    await fs.renameOrMoveFile('/c', '/c2', 0); // whole in the vault: moves as a changed file
    await fs.renameOrMoveFile('/c2', '/c3', 0); // and on, before its upload
    loseNextCopyAnswer();
    await expect(fs.renameOrMoveFile('/e', '/e2', 0)).rejects.toMatchObject({ errno: E.EIO });
    expect(await fs.getFileInfo('/e2')).toBeNull();
    await vault.flushAll();
    await vault.sendDeletes();
    // Before: c2 stayed (the landed copy), and so did e2, a second copy of a file mv said it had not moved.
    expect([[...storage.objects.keys()].sort(), storage.objects.get('c3')?.data.toString(), vault.conflicts]).toEqual([['c3', 'e'], 'data', []]);
  });

  it('rmdir while storage is unreachable: a directory made here or listed before is judged by what the vault knows; one it never listed is EIO', async () => {
    await vault.close();
    const faulty = await reopenOver();
    storage.putObject('never/x', 'x');
    await writeFile('/listed/f', 'f');
    expect((await fs.enumerateDirectory('/listed')).map((e) => e.name)).toEqual(['f']);
    expect((await fs.getFileInfo('/never'))?.kind).toBe('dir');
    faulty.reachable(false);
    await fs.createDirectory('/made', 0o755, caller);
    await fs.deleteDirectory('/made'); // before: EIO
    await fs.createDirectory('/full', 0o755, caller);
    const { handle } = await fs.createFile('/full/a', 0o644, 0o1, caller);
    await fs.closeFile(handle);
    await expect(fs.deleteDirectory('/full')).rejects.toMatchObject({ errno: E.ENOTEMPTY });
    await expect(fs.deleteDirectory('/listed')).rejects.toMatchObject({ errno: E.ENOTEMPTY });
    await fs.deleteFile('/listed/f');
    await fs.deleteDirectory('/listed'); // `rm -r` of a tree listed before
    await expect(fs.deleteDirectory('/never')).rejects.toMatchObject({ errno: E.EIO });
    expect([await fs.getFileInfo('/made'), await fs.getFileInfo('/listed')]).toEqual([null, null]);
    faulty.reachable(true);
    await vault.flushAll();
    await vault.sendDeletes();
    expect([...storage.objects.keys()].sort()).toEqual(['full/', 'full/a', 'never/x']);
  });

  it('a directory is moved while storage is offline: the vault moves the tree it knows and holds whole, uploaded under the new names when storage is back; one it does not know or hold is EIO', async () => {
    await vault.close();
    const { faulty, powered } = await reopenPowered();
    await writeFile('/d/a', 'a');
    await writeFile('/d/sub/b', 'b');
    await fs.createDirectory('/d/empty', 0o700, caller);
    await fs.createDirectory('/t', 0o755, caller);
    await vault.flushAll();
    storage.putObject('x/big', 'in storage only');
    storage.putObject('never/y', 'y');
    expect((await fs.enumerateDirectory('/x')).map((e) => e.name)).toEqual(['big']);
    expect((await fs.getFileInfo('/never'))?.kind).toBe('dir');
    expect((await fs.enumerateDirectory('/')).map((e) => e.name).sort()).toEqual(['d', 'never', 't', 'x']);
    faulty.reachable(false);
    powered.goOffline(new StorageError(RWRESULT.FAILURE, 'probe', '', 'cannot reach the storage'));
    // Made offline, inside it: a file and a directory.
    await fs.createDirectory('/d/made', 0o755, caller);
    const { handle } = await fs.createFile('/d/new', 0o644, 0o1, caller);
    await fs.writeFile(handle, 0, Buffer.from('new'));
    await fs.closeFile(handle);
    await fs.renameOrMoveFile('/d', '/e', 0); // before: EIO
    await fs.renameOrMoveFile('/e', '/t', 0); // onto an empty directory (its marker in storage)
    expect(await fs.getFileInfo('/d')).toBeNull();
    expect(await fs.getFileInfo('/e')).toBeNull();
    expect((await fs.enumerateDirectory('/t')).map((e) => `${e.name}:${e.info.kind}`).sort()).toEqual(['a:file', 'empty:dir', 'made:dir', 'new:file', 'sub:dir']);
    expect((await fs.enumerateDirectory('/t/sub')).map((e) => e.name)).toEqual(['b']);
    expect((await fs.getFileInfo('/t/empty'))?.mode).toBe(0o700);
    const h = await fs.openFile('/t/sub/b', 0);
    expect((await fs.readFile(h, 0, 10)).toString()).toBe('b');
    await fs.closeFile(h);
    // A file in storage only, and a directory never listed, cannot move without storage.
    await expect(fs.renameOrMoveFile('/x', '/x2', 0)).rejects.toMatchObject({ errno: E.EIO });
    await expect(fs.renameOrMoveFile('/never', '/n2', 0)).rejects.toMatchObject({ errno: E.EIO });
    expect((await fs.enumerateDirectory('/x')).map((e) => e.name)).toEqual(['big']);
    expect(storage.objects.has('d/sub/b')).toBe(true);
    faulty.reachable(true);
    expect(await vault.checkOnline()).toBe(true);
    await vault.flushAll();
    await vault.sendDeletes();
    expect([...storage.objects.keys()].sort()).toEqual(['never/y', 't/', 't/a', 't/empty/', 't/made/', 't/new', 't/sub/', 't/sub/b', 'x/big']);
    expect([storage.objects.get('t/sub/b')?.data.toString(), storage.objects.get('t/new')?.data.toString(), vault.conflicts]).toEqual(['b', 'new', []]);
  });

  it('a directory with changes not uploaded yet is moved as storage goes away: the move does not wait for storage to come back', async () => {
    await vault.close();
    const { faulty, powered } = await reopenPowered();
    await fs.createDirectory('/h', 0o755, caller);
    const { handle } = await fs.createFile('/h/f', 0o644, 0o1, caller);
    await fs.writeFile(handle, 0, Buffer.from('pending'));
    await fs.closeFile(handle);
    faulty.reachable(false);
    // Its upload goes first, fails, and takes storage offline. Before: the move waited for the upload, that is
    // for storage to come back.
    await fs.renameOrMoveFile('/h', '/h2', 0);
    expect([powered.power, await fs.getFileInfo('/h'), (await fs.getFileInfo('/h2/f'))?.size]).toEqual(['offline', null, 7]);
    faulty.reachable(true);
    expect(await vault.checkOnline()).toBe(true);
    await vault.flushAll();
    await vault.sendDeletes();
    expect([[...storage.objects.keys()].sort(), storage.objects.get('h2/f')?.data.toString()]).toEqual([['h2/', 'h2/f'], 'pending']);
  });

  it('a file whose upload landed but whose answer was lost, renamed or removed before the retry: nothing stays under the old name', async () => {
    await vault.close();
    const faulty = await reopenOver({ retryBaseMs: 60_000, retryMaxMs: 60_000 });
    const { handle } = await fs.createFile('/p', 0o644, 0o1, caller);
    await fs.writeFile(handle, 0, Buffer.from('data'));
    await fs.closeFile(handle);
    faulty.loseAnswerNext();
    void vault.flushFile('p').catch(() => undefined); // waits for the retry, a minute away
    for (let i = 0; i < 200 && !vault.uploadOutcomeUnknown('p'); i++) await new Promise((r) => setTimeout(r, 5));
    expect([storage.objects.has('p'), vault.uploadOutcomeUnknown('p')]).toEqual([true, true]);
    await fs.renameOrMoveFile('/p', '/p2', 0);
    await vault.sendDeletes();
    // Before: p stayed in storage, an object under a name the file no longer has.
    expect([...storage.objects.keys()]).toEqual([]);
    await vault.flushFile('p2');
    expect([[...storage.objects.keys()], storage.objects.get('p2')?.data.toString(), vault.conflicts]).toEqual([['p2'], 'data', []]);
    // The same, removed instead of renamed: before, the object stayed, a file rm had removed.
    const second = await fs.createFile('/q', 0o644, 0o1, caller);
    await fs.writeFile(second.handle, 0, Buffer.from('data'));
    await fs.closeFile(second.handle);
    faulty.loseAnswerNext();
    void vault.flushFile('q').catch(() => undefined);
    for (let i = 0; i < 200 && !vault.uploadOutcomeUnknown('q'); i++) await new Promise((r) => setTimeout(r, 5));
    expect(storage.objects.has('q')).toBe(true);
    await fs.deleteFile('/q');
    await vault.sendDeletes();
    expect([...storage.objects.keys()]).toEqual(['p2']);
  });

  it('a directory keeps its mode while storage is unreachable: its marker record answers, not the defaults', async () => {
    await fs.createDirectory('/private', 0o700, caller);
    await writeFile('/private/f', 'x');
    await vault.close();
    const faulty = await reopenOver(); // a new mount: nothing in the metadata cache
    faulty.reachable(false);
    // Before: 0755, the defaults for a directory holding cached files.
    expect([(await fs.getFileInfo('/private'))?.kind, (await fs.getFileInfo('/private'))?.mode]).toEqual(['dir', 0o700]);
    // Changed online since (its marker rewritten at once): the record follows, and offline shows the new mode.
    faulty.reachable(true);
    await fs.setFileAttributes('/private', { mode: 0o750 });
    await vault.close();
    const again = await reopenOver();
    again.reachable(false);
    // Listings taken as stale at once: the look-up falls back on what the vault holds, the marker's record first.
    fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 }, listingTtlMs: 0 });
    expect((await fs.getFileInfo('/private'))?.mode).toBe(0o750);
  });

  it('mkdir where a file was removed while storage is unreachable: the directory shows at once, and its marker goes up after the file\'s delete', async () => {
    await vault.close();
    const faulty = await reopenOver();
    await writeFile('/n', 'a file first');
    faulty.reachable(false);
    await fs.deleteFile('/n');
    await fs.createDirectory('/n', 0o750, caller); // before: EIO (the file's delete had to go first)
    const { handle } = await fs.createFile('/n/inside', 0o644, 0o1, caller);
    await fs.writeFile(handle, 0, Buffer.from('x'));
    await fs.closeFile(handle);
    expect([(await fs.getFileInfo('/n'))?.kind, (await fs.enumerateDirectory('/')).map((e) => `${e.name}:${e.info.kind}`)]).toEqual(['dir', ['n:dir']]);
    faulty.reachable(true);
    // The marker's upload alone: the file's delete goes with it, first. Left pending, it hid the directory once the
    // marker was uploaded.
    await vault.flushFile('n/');
    expect([storage.objects.has('n'), storage.objects.has('n/'), (await fs.getFileInfo('/n'))?.kind]).toEqual([false, true, 'dir']);
    await vault.flushAll();
    expect([...storage.objects.keys()].sort()).toEqual(['n/', 'n/inside']);
    expect([(await fs.getFileInfo('/n'))?.kind, (await fs.getFileInfo('/n'))?.mode]).toEqual(['dir', 0o750]);
  });

  it('chmod of a closed file or a directory while storage is unreachable is journaled, and copied onto the object once storage is back (no data upload); one known only from a listing is EIO', async () => {
    await vault.close();
    const faulty = await reopenOver();
    await writeFile('/f', 'data');
    await fs.createDirectory('/dir', 0o755, caller);
    await vault.flushAll();
    storage.putObject('listed/o', 'x');
    expect((await fs.enumerateDirectory('/listed')).map((e) => e.name)).toEqual(['o']);
    const writes = storage.calls.write;
    faulty.reachable(false);
    expect((await fs.setFileAttributes('/f', { mode: 0o600 })).mode).toBe(0o600); // before: EIO
    expect((await fs.setFileAttributes('/dir', { mode: 0o700 })).mode).toBe(0o700); // before: EIO
    expect([(await fs.getFileInfo('/f'))?.mode, (await fs.getFileInfo('/dir'))?.mode]).toEqual([0o600, 0o700]);
    // Its mode, owner and time are the listing's defaults: journaled, they would overwrite the object's own.
    await expect(fs.setFileAttributes('/listed/o', { mode: 0o600 })).rejects.toMatchObject({ errno: E.EIO });
    faulty.reachable(true);
    await vault.flushAll();
    expect([Number(storage.objects.get('f')!.meta.mode) & 0o7777, Number(storage.objects.get('dir/')!.meta.mode) & 0o7777]).toEqual([0o600, 0o700]);
    expect([storage.objects.get('f')!.data.toString(), storage.calls.write - writes, vault.conflicts]).toEqual(['data', 0, []]);
  });

  it('chmod of a closed file copies the object onto itself with new metadata (no data upload)', async () => {
    await writeFile('/f', 'data');
    const writes = storage.calls.write;
    await fs.setFileAttributes('/f', { mode: 0o700 });
    expect(storage.calls.write).toBe(writes);
    expect(Number(storage.objects.get('f')!.meta.mode) & 0o7777).toBe(0o700);
    expect((await fs.getFileInfo('/f'))?.mode).toBe(0o700);
  });

  it('an upload asked for while unlink brings an open file\'s missing blocks in never starts: nothing comes back after the delete', async () => {
    storage.putObject('z', Buffer.alloc(3 * 1024 * 1024, 1));
    const handle = await fs.openFile('/z', 2);
    await fs.writeFile(handle, 0, Buffer.from('NEW')); // changed; blocks 1 and 2 still in storage only
    const gate = resolvable();
    const begun = resolvable();
    const read = storage.read.bind(storage);
    storage.read = async (...args) => {
      storage.read = read;
      begun.resolve();
      await gate.promise;
      return read(...args);
    };
    // A PUT slower than the delete's batch (a large file on a slow link).
    const write = storage.write.bind(storage);
    storage.write = async (...args) => {
      await new Promise((r) => setTimeout(r, 300));
      return write(...args);
    };
    const unlinking = fs.deleteFile('/z');
    await begun.promise;
    const flushing = vault.flushAll(); // `s3vault flush`, or an fsync with --sync remote, meanwhile
    await new Promise((r) => setTimeout(r, 20));
    gate.resolve();
    await unlinking;
    await vault.sendDeletes();
    await flushing;
    await new Promise((r) => setTimeout(r, 350));
    // Before: the upload started during the unlink, its PUT racing the delete (one landing after it leaves the
    // object back under a removed name).
    expect([storage.objects.has('z'), storage.calls.write ?? 0]).toEqual([false, 0]);
    await fs.closeFile(handle);
  });

  it('a file opened and written while chmod copies its object onto itself gets both: the new mode and the new bytes, no conflict', async () => {
    await writeFile('/m', 'old bytes');
    const gate = resolvable();
    const begun = pauseNextCopy(gate.promise);
    const chmod = fs.setFileAttributes('/m', { mode: 0o600 });
    await begun;
    const handle = await fs.openFile('/m', 2);
    await fs.writeFile(handle, 0, Buffer.from('NEW'));
    await fs.closeFile(handle);
    const flushing = vault.flushAll();
    await new Promise((r) => setTimeout(r, 20));
    gate.resolve();
    await chmod;
    await flushing;
    await vault.flushAll();
    // Before: the upload landed during the copy, which then put the old bytes back under the new mode.
    const o = storage.objects.get('m');
    expect([o?.data.toString(), Number(o?.meta.mode) & 0o7777, vault.conflicts, (await fs.getFileInfo('/m'))?.mode]).toEqual(['NEW bytes', 0o600, [], 0o600]);
  });

  it('chmod, chown and utimens that change nothing send nothing (tar x sets them on every directory it makes)', async () => {
    await fs.createDirectory('/d', 0o755, caller);
    await writeFile('/d/f', 'data');
    const writes = storage.calls.write ?? 0;
    const copies = storage.calls.copy ?? 0;
    const dir = (await fs.getFileInfo('/d'))!;
    const file = (await fs.getFileInfo('/d/f'))!;
    await fs.setFileAttributes('/d', { uid: caller.uid, gid: caller.gid });
    await fs.setFileAttributes('/d', { mode: 0o40755 });
    await fs.setFileAttributes('/d', { mtimeMs: dir.mtimeMs });
    await fs.setFileAttributes('/d/f', { mode: file.mode, uid: file.uid, gid: file.gid, mtimeMs: file.mtimeMs });
    expect(storage.calls.write ?? 0).toBe(writes);
    expect(storage.calls.copy ?? 0).toBe(copies);
    // A real change still goes to storage, and only it.
    await fs.setFileAttributes('/d', { mtimeMs: 1_500_000_000_000 });
    expect(storage.calls.write).toBe(writes + 1);
    expect(Number(storage.objects.get('d/')!.meta.mtime)).toBe(1_500_000_000);
    await fs.setFileAttributes('/d/f', { mode: 0o600 });
    expect(storage.calls.copy).toBe(copies + 1);
    expect(Number(storage.objects.get('d/f')!.meta.mode) & 0o7777).toBe(0o600);
  });

  it('truncate of a closed file rewrites the object', async () => {
    await writeFile('/t', 'abcdef');
    await fs.setFileAttributes('/t', { size: 2 });
    await vault.flushAll();
    expect(storage.objects.get('t')!.data.toString()).toBe('ab');
  });

  it('orphans of an earlier run are uploaded at mount', async () => {
    const f = await vault.openFile('orphan.txt', null, { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 });
    await f.write(0, Buffer.from('saved'));
    await f.commit();
    await vault.closeFile(f);
    await vault.close();
    vault = await Vault.open({ dir, storage, objectMeta: objectMetaFor });
    fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
    expect(vault.orphans.map((r) => r.key)).toEqual(['orphan.txt']);
    await fs.mount();
    await vault.flushAll();
    expect(storage.objects.get('orphan.txt')!.data.toString()).toBe('saved');
  });

  it('local files (editor swap files) live only in the vault; a rename moves a file in or out of the bucket', async () => {
    await writeFile('/.notes.txt.swp', 'swap');
    expect(storage.objects.has('.notes.txt.swp')).toBe(false);
    expect((await fs.getFileInfo('/.notes.txt.swp'))?.size).toBe(4);
    expect((await fs.enumerateDirectory('/')).map((e) => e.name)).toEqual(['.notes.txt.swp']);
    // local → ordinary name: uploaded
    await fs.renameOrMoveFile('/.notes.txt.swp', '/notes.txt', 0);
    await vault.flushAll();
    expect(storage.objects.get('notes.txt')!.data.toString()).toBe('swap');
    // ordinary → local name: leaves the bucket, stays readable
    await fs.renameOrMoveFile('/notes.txt', '/.notes.txt.swo', 0);
    expect(storage.objects.has('notes.txt')).toBe(false);
    expect(storage.objects.has('.notes.txt.swo')).toBe(false);
    const h = await fs.openFile('/.notes.txt.swo', 0);
    expect((await fs.readFile(h, 0, 100)).toString()).toBe('swap');
    await fs.cleanupFile(h);
    await fs.closeFile(h);
    expect(storage.objects.size).toBe(0);
    await fs.deleteFile('/.notes.txt.swo');
    expect(await fs.getFileInfo('/.notes.txt.swo')).toBeNull();
  });

  it('a directory rename interrupted half-way is finished at the next mount (rename journal)', async () => {
    await fs.createDirectory('/src', 0o755, caller);
    for (const n of ['a', 'b', 'c']) await writeFile(`/src/${n}`, n);
    await vault.close();
    const faulty = await reopenOver();
    faulty.failNext('delete', RWRESULT.FAILURE, 100); // the copies are made, the deletes are not (each attempt): the "crash"
    await expect(fs.renameOrMoveFile('/src', '/dst', 0)).rejects.toMatchObject({ errno: 5 });
    expect(vault.pendingRenames()).toHaveLength(1);
    // A file under the new name written before the crash (a handle left open on it): the finishing copies must
    // not bring its old bytes back. Before, they did, and its record was dropped.
    const h = await fs.openFile('/dst/a', 2);
    await fs.writeFile(h, 0, Buffer.from('changed'));
    await fs.closeFile(h);
    await vault.close();
    vault = await Vault.open({ dir, storage, objectMeta: objectMetaFor });
    fs = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
    await fs.mount();
    expect(vault.pendingRenames()).toHaveLength(0);
    expect([...storage.objects.keys()].sort()).toEqual(['dst/', 'dst/a', 'dst/b', 'dst/c']);
    expect((await fs.enumerateDirectory('/dst')).map((e) => e.name).sort()).toEqual(['a', 'b', 'c']);
    await vault.flushAll();
    expect([storage.objects.get('dst/a')?.data.toString(), vault.conflicts]).toEqual(['changed', []]);
  });

  it('a directory moves with its copies in parallel (16 at most); a failed copy deletes nothing', async () => {
    for (let i = 0; i < 40; i++) storage.putObject(`big/f${i}`, `x${i}`);
    const copies = overlapOf(storage, 'copy');
    await fs.renameOrMoveFile('/big', '/moved', 0);
    expect(copies.most).toBeGreaterThan(1);
    expect(copies.most).toBeLessThanOrEqual(16);
    expect([...storage.objects.keys()].filter((k) => k.startsWith('big/'))).toEqual([]);
    expect((await fs.enumerateDirectory('/moved')).length).toBe(40);
    // Copies that keep failing: the rename fails and every source is still there.
    await vault.close();
    const faulty = await reopenOver();
    faulty.failNext('copy', RWRESULT.FAILURE, 1000);
    await expect(fs.renameOrMoveFile('/moved', '/again', 0)).rejects.toMatchObject({ errno: 5 });
    expect([...storage.objects.keys()].filter((k) => k.startsWith('moved/f')).length).toBe(40);
  });

  it('a directory move whose copies fail for a moment goes on from where it stopped (before: EIO, both trees half copied)', async () => {
    await vault.close();
    const faulty = await reopenOver();
    for (let i = 0; i < 40; i++) storage.putObject(`burst/f${i}`, `x${i}`);
    await writeFile('/burst/changed', 'old');
    const h = await fs.openFile('/burst/changed', 2);
    const copies: string[] = [];
    const copy = storage.copy.bind(storage);
    storage.copy = (from, to, meta) => {
      copies.push(from);
      // The third copy fails (and those the first run has in flight meanwhile), as a burst of 503s past the SDK's
      // retries would.
      if (copies.length === 3) faulty.failNext('copy', RWRESULT.FAILURE, 16);
      return copy(from, to, meta);
    };
    await fs.renameOrMoveFile('/burst', '/calm', 0);
    await fs.writeFile(h, 0, Buffer.from('new'));
    await fs.closeFile(h);
    await vault.flushAll();
    await vault.sendDeletes();
    expect([...storage.objects.keys()].filter((k) => k.startsWith('burst')).length).toBe(0);
    expect([...storage.objects.keys()].filter((k) => k.startsWith('calm/')).length).toBe(42);
    expect([storage.objects.get('calm/changed')?.data.toString(), vault.conflicts]).toEqual(['new', []]);
  });

  it('a directory rename uploads the changes under it together first, and the copies carry them', async () => {
    await fs.createDirectory('/fresh', 0o755, caller);
    for (let i = 0; i < 40; i++) {
      const { handle } = await fs.createFile(`/fresh/f${i}`, 0o644, 0o1, caller);
      await fs.writeFile(handle, 0, Buffer.from(`v${i}`));
      await fs.cleanupFile(handle);
      await fs.closeFile(handle);
    }
    const uploads = overlapOf(storage, 'write');
    await fs.renameOrMoveFile('/fresh', '/done', 0);
    expect(uploads.most).toBeGreaterThan(1);
    for (let i = 0; i < 40; i++) expect(storage.objects.get(`done/f${i}`)?.data.toString()).toBe(`v${i}`);
    expect([...storage.objects.keys()].filter((k) => k.startsWith('fresh'))).toEqual([]);
  });

  it('names over 255 bytes are ENAMETOOLONG', async () => {
    await expect(fs.createFile(`/${'x'.repeat(256)}`, 0o644, 0, caller)).rejects.toMatchObject({ errno: 36 });
  });

  it('read-only mounts refuse changes with EROFS', async () => {
    const ro = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 }, readOnly: true });
    await expect(ro.createFile('/x', 0o644, 0, caller)).rejects.toMatchObject({ errno: 30 });
    await expect(ro.createDirectory('/x', 0o755, caller)).rejects.toMatchObject({ errno: 30 });
  });
});
