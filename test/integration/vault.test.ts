/**
 * The vault through a real mount on a real S3-compatible server: bounded size while reading more than the
 * limit, pins that survive eviction and read with the server gone, fsck repairing a damaged block from S3,
 * and a kill -9 in the middle of a large read.
 */
import { createHash, randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, writeSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cliEnv, forceUnmount, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh, shResult } from '../helpers/sh.js';

const MiB = 1024 * 1024;
const BUCKET = 'vault-test';
let s3: TestServer;
const mounts: TestMount[] = [];
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const objects: Record<string, Buffer> = {};

function cli(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { env: cliEnv(), encoding: 'utf8', timeout: 120_000 });
}

/** Bytes the vault's data files really occupy on disk. */
function dataBytes(vault: string): number {
  const dir = path.join(vault, 'data');
  return readdirSync(dir).reduce((n, f) => n + statSync(path.join(dir, f)).blocks * 512, 0);
}

async function mountIt(extra: string[] = [], vault?: string): Promise<TestMount> {
  const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: extra, vault });
  mounts.push(m);
  return m;
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  for (const [name, size] of [['big/one.bin', 40 * MiB], ['big/two.bin', 40 * MiB], ['keep/pinned.bin', 6 * MiB], ['keep/sub/also.bin', 3 * MiB], ['other.bin', 8 * MiB]] as const) {
    objects[name] = randomBytes(size);
    await s3.put(BUCKET, name, objects[name]);
  }
});

afterAll(async () => {
  for (const m of mounts) await m.stop().catch(() => undefined);
  await s3?.stop();
});

describe('vault through a mount', () => {
  it('reads 3x its size limit correctly and stays within the limit on disk', async () => {
    const m = await mountIt(['--cache-size', '32M']);
    expect(sh(`md5sum < ${m.mountpoint}/big/one.bin`, 120).split(' ')[0]).toBe(md5(objects['big/one.bin']!));
    expect(sh(`md5sum < ${m.mountpoint}/big/two.bin`, 120).split(' ')[0]).toBe(md5(objects['big/two.bin']!));
    expect(sh(`cat ${m.mountpoint}/other.bin ${m.mountpoint}/big/one.bin | md5sum`, 120).split(' ')[0]).toBe(
      md5(Buffer.concat([objects['other.bin']!, objects['big/one.bin']!])),
    );
    await new Promise((r) => setTimeout(r, 200));
    expect(dataBytes(m.vault)).toBeLessThanOrEqual(32 * MiB);
    await m.stop();
  });

  it('pinned files survive eviction and read with the server stopped; uncached data fails fast with EIO', async () => {
    const m = await mountIt(['--cache-size', '8M']);
    const pin = cli(['pin', `${m.mountpoint}/keep`]);
    expect(pin.status, pin.stderr).toBe(0);
    expect(pin.stdout).toMatch(/pinned 2 files \(9\.0 MiB\)/);
    const status = cli(['status', m.mountpoint, '--json']);
    const rows = (JSON.parse(status.stdout) as { files: { key: string; pinned: boolean; cachedBytes: number }[] }).files;
    expect(rows.filter((r) => r.pinned).map((r) => [r.key, r.cachedBytes])).toEqual([
      ['keep/pinned.bin', 6 * MiB],
      ['keep/sub/also.bin', 3 * MiB],
    ]);
    // Reading more than the limit evicts everything that is not pinned.
    sh(`cat ${m.mountpoint}/big/one.bin > /dev/null`, 120);
    sh(`stat ${m.mountpoint}/other.bin > /dev/null`); // cache its attributes while the server is up
    // The storage goes away.
    await s3.server.stop();
    try {
      expect(sh(`md5sum < ${m.mountpoint}/keep/pinned.bin`).split(' ')[0]).toBe(md5(objects['keep/pinned.bin']!));
      expect(sh(`md5sum < ${m.mountpoint}/keep/sub/also.bin`).split(' ')[0]).toBe(md5(objects['keep/sub/also.bin']!));
      const started = Date.now();
      const r = shResult(`cat ${m.mountpoint}/other.bin > /dev/null`, 60);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/Input\/output error/);
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await m.stop();
      // Restart the same server data on a new port for the next tests.
      const again = await startTestServer();
      await s3.stop().catch(() => undefined);
      s3 = again;
      await s3.createBucket(BUCKET);
      for (const [k, v] of Object.entries(objects)) await s3.put(BUCKET, k, v);
    }
  });

  it('fsck finds a block damaged on disk and the file reads correctly again from S3', async () => {
    let m = await mountIt();
    const vault = m.vault;
    expect(sh(`md5sum < ${m.mountpoint}/other.bin`).split(' ')[0]).toBe(md5(objects['other.bin']!));
    await m.stop();
    // Damage the cached copy behind the vault's back.
    const dataDir = path.join(vault, 'data');
    const victim = readdirSync(dataDir).map((f) => path.join(dataDir, f)).find((f) => statSync(f).size === 8 * MiB)!;
    const fd = openSync(victim, 'r+');
    writeSync(fd, Buffer.from('garbage written behind the vault'), 0, 32, 3 * MiB + 100);
    closeSync(fd);
    const fsck = cli(['fsck', '--vault', vault]);
    expect(fsck.status, fsck.stderr).toBe(0);
    expect(fsck.stdout).toMatch(/repaired: other\.bin block at 3145728 was damaged/);
    expect(cli(['fsck', '--vault', vault]).stdout).toMatch(/no damage found/);
    m = await mountIt([], vault);
    expect(sh(`md5sum < ${m.mountpoint}/other.bin`).split(' ')[0]).toBe(md5(objects['other.bin']!));
    await m.stop();
  });

  it('a kill -9 in the middle of a large read leaves a vault that reopens consistent', async () => {
    let m = await mountIt();
    const vault = m.vault;
    const reader = spawn('bash', ['-c', `cat ${m.mountpoint}/big/two.bin > /dev/null`], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 400));
    m.child.kill('SIGKILL');
    await new Promise((r) => m.child.once('exit', r));
    reader.kill('SIGKILL');
    forceUnmount(m.mountpoint);
    const fsck = cli(['fsck', '--vault', vault]);
    expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
    expect(fsck.stdout).not.toMatch(/DAMAGED/);
    m = await mountIt([], vault);
    expect(sh(`md5sum < ${m.mountpoint}/big/two.bin`, 120).split(' ')[0]).toBe(md5(objects['big/two.bin']!));
    await m.stop();
  });

  it('tags appear as user.s3vault.tag.XXXX extended attributes, persist, and are range-checked', async () => {
    const m = await mountIt();
    const f = `${m.mountpoint}/other.bin`;
    const py = (code: string) => shResult(`python3 -c '${code}'`);
    expect(py(`import os; os.setxattr("${f}", "user.s3vault.tag.0001", bytes([1,2,3]))`).code).toBe(0);
    expect(py(`import os; print(os.getxattr("${f}", "user.s3vault.tag.0001").hex())`).stdout.trim()).toBe('010203');
    const names = py(`import os; print(sorted(os.listxattr("${f}")))`).stdout;
    expect(names).toMatch(/user\.s3vault\.etag/);
    expect(names).toMatch(/user\.s3vault\.tag\.0001/);
    expect(names).toMatch(/user\.s3vault\.tag\.c001/); // s3vault's own: the ETag
    expect(py(`import os; os.setxattr("${f}", "user.s3vault.tag.d000", b"x")`).stderr).toMatch(/Invalid argument/);
    expect(py(`import os; os.setxattr("${f}", "trusted.other", b"x")`).stderr).toMatch(/not supported/i); // user.* are stored in S3 metadata (posix.test.ts)
    expect(py(`import os; os.getxattr("${f}", "user.s3vault.tag.0002")`).stderr).toMatch(/No data available/);
    const vault = m.vault;
    await m.stop();
    const again = await mountIt([], vault);
    expect(shResult(`python3 -c 'import os; print(os.getxattr("${again.mountpoint}/other.bin", "user.s3vault.tag.0001").hex())'`).stdout.trim()).toBe('010203');
    await again.stop();
  });

  it('fsck --recreate saves the data files of an irreparable vault and starts an empty one', async () => {
    const m = await mountIt();
    sh(`cat ${m.mountpoint}/other.bin > /dev/null`);
    await m.stop();
    const fd = openSync(path.join(m.vault, 'vault.db'), 'r+');
    writeSync(fd, Buffer.alloc(4096, 0x41), 0, 4096, 0);
    closeSync(fd);
    const plain = cli(['fsck', '--vault', m.vault]);
    expect(plain.status).toBe(4);
    expect(plain.stderr).toMatch(/corrupt.*--recreate/);
    const r = cli(['fsck', '--vault', m.vault, '--recreate']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/saved in .*salvage-/);
    const again = await mountIt([], m.vault);
    expect(sh(`md5sum < ${again.mountpoint}/other.bin`).split(' ')[0]).toBe(md5(objects['other.bin']!));
  });
});
