/**
 * Odd buckets (docs/SEMANTICS.md "Odd keys"): keys that cannot all be files are shown under reserved aliases
 * that map back to them — never a hidden object, a crash or a corrupted listing. In-memory storage: s3rver's
 * disk layout cannot even hold most of these keys (a and a/b, a//b, ./, ../, 300-byte names).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Vault } from '../../src/cache/vault.js';
import { objectMetaFor } from '../../src/fs/mirror/meta.js';
import { forgetLongAliases } from '../../src/fs/mirror/keys.js';
import { S3Mirror } from '../../src/fs/mirror/mirror.js';
import { silentLogger } from '../../src/log.js';
import { MemoryStorage } from '../../src/storage/memory.js';

const caller = { uid: 1000, gid: 1000, pid: 1 };
let dir: string;
let storage: MemoryStorage;
let vault: Vault;
let fs: S3Mirror;
let warnings: string[];

async function read(p: string): Promise<string> {
  const h = await fs.openFile(p, 0);
  try {
    return (await fs.readFile(h, 0, 1 << 20)).toString();
  } finally {
    await fs.closeFile(h);
  }
}

const names = async (p: string) => (await fs.enumerateDirectory(p)).map((e) => `${e.name}:${e.info.kind}`).sort();

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-odd-'));
  storage = new MemoryStorage();
  vault = await Vault.open({ dir, storage, objectMeta: objectMetaFor });
  warnings = [];
  const log = { ...silentLogger, warn: (obj: unknown, msg?: string) => warnings.push(`${msg} ${JSON.stringify(obj)}`), child: () => log } as unknown as typeof silentLogger;
  fs = new S3Mirror({ vault, log, owner: { uid: 0, gid: 0 } });
});
afterEach(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('odd keys', () => {
  it('a file and a directory of the same name: the directory keeps the name, the file is <name>.s3vault~file', async () => {
    storage.putObject('a', 'the file a');
    storage.putObject('a/b', 'inside a');
    expect(await names('/')).toEqual(['a.s3vault~file:file', 'a:dir']);
    expect((await fs.getFileInfo('/a'))?.kind).toBe('dir');
    expect(await read('/a/b')).toBe('inside a');
    expect(await read('/a.s3vault~file')).toBe('the file a');
    // Reported once, however often it is listed.
    await names('/');
    expect(warnings.filter((w) => w.includes('"key":"a"'))).toHaveLength(1);
    // Renaming the alias resolves the clash: the object moves, the directory stays.
    await fs.renameOrMoveFile('/a.s3vault~file', '/a-file', 0);
    expect(storage.objects.has('a')).toBe(false);
    expect((await storage.read('a-file', 0, 100)).data.toString()).toBe('the file a');
    expect(await names('/')).toEqual(['a-file:file', 'a:dir']);
  });

  it('empty segments, "." and ".." become .s3vault~empty, ~dot, ~dotdot and read back', async () => {
    storage.putObject('d//x', 'double slash');
    storage.putObject('/lead', 'leading slash');
    storage.putObject('./y', 'dot');
    storage.putObject('../z', 'dotdot');
    expect(await names('/')).toEqual(['.s3vault~dot:dir', '.s3vault~dotdot:dir', '.s3vault~empty:dir', 'd:dir']);
    expect(await names('/d')).toEqual(['.s3vault~empty:dir']);
    expect(await read('/d/.s3vault~empty/x')).toBe('double slash');
    expect(await read('/.s3vault~empty/lead')).toBe('leading slash');
    expect(await read('/.s3vault~dot/y')).toBe('dot');
    expect(await read('/.s3vault~dotdot/z')).toBe('dotdot');
  });

  it('a segment over 255 bytes gets a hashed alias, resolvable after the name cache is gone', async () => {
    const long = 'L'.repeat(300);
    storage.putObject(`dir/${long}`, 'long name');
    const listed = await names('/dir');
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatch(/^\.s3vault~long~[0-9a-f]{32}:file$/);
    const alias = listed[0]!.split(':')[0]!;
    expect(await read(`/dir/${alias}`)).toBe('long name');
    // A new process (a remount) knows no alias yet: it is found by listing its directory.
    forgetLongAliases();
    const fresh = new S3Mirror({ vault, log: silentLogger, owner: { uid: 0, gid: 0 } });
    expect((await fresh.getFileInfo(`/dir/${alias}`))?.size).toBe(9);
  });

  it('a trailing-slash object with data is a directory; names with spaces, %, +, ?, # and Unicode are plain names', async () => {
    storage.putObject('withdata/', 'marker with bytes');
    storage.putObject('q/sp ace 100% a+b ¿q? #1 ü日本', 'x');
    expect(await names('/')).toEqual(['q:dir', 'withdata:dir']);
    expect(await names('/q')).toEqual(['sp ace 100% a+b ¿q? #1 ü日本:file']);
    expect(warnings).toHaveLength(0);
  });

  it('names containing .s3vault~ cannot be created (EINVAL)', async () => {
    await expect(fs.createFile('/x.s3vault~file', 0o644, 1, caller)).rejects.toMatchObject({ errno: 22 });
    await expect(fs.createDirectory('/.s3vault~empty', 0o755, caller)).rejects.toMatchObject({ errno: 22 });
  });
});
