/**
 * Journaled deletes end to end: `rm` through a real mount on s3rver, the requests seen by a logging proxy in
 * front of it. Removing files sends no request per file but DeleteObjects batches, by itself shortly after; a
 * `kill -9` before they went loses none of them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { scratchDir } from '../helpers/scratch.js';
import { sh } from '../helpers/sh.js';

const BUCKET = 'deletes-test';
let s3: TestServer;
let proxy: ChildProcess | undefined;
let endpoint: string;
let log: string;
const mounts: TestMount[] = [];

const requests = (): string[] => readFileSync(log, 'utf8').split('\n').filter(Boolean);
const flush = (m: TestMount) => sh(`${process.execPath} ${BIN} flush --wait ${m.mountpoint}`, 120);

async function waitFor(what: string, probe: () => Promise<boolean>, ms = 15_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (await probe()) return;
  throw new Error(`timed out waiting for ${what}`);
}

/** Which of the keys the server still has. */
async function present(keys: string[]): Promise<string[]> {
  const found = await Promise.all(keys.map(async (k) => ((await s3.head(BUCKET, k)) ? k : '')));
  return found.filter(Boolean);
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  log = path.join(scratchDir('deletes'), 'requests.log');
  writeFileSync(log, '');
  const script = fileURLToPath(new URL('../helpers/request-log-proxy.mjs', import.meta.url));
  proxy = spawn(process.execPath, [script, String(new URL(s3.endpoint).port), log], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve) => proxy!.stdout!.once('data', (c: Buffer) => resolve(Number(/listening (\d+)/.exec(c.toString())![1]))));
  endpoint = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  for (const m of mounts) await m.stop('SIGKILL');
  proxy?.kill();
  await s3?.stop();
});

describe('rm: journaled deletes, sent batched', () => {
  it('rm of 300 files: the names go at once, the objects soon after in DeleteObjects batches, with no DELETE per file', async () => {
    const m = await mount({ endpoint, bucket: BUCKET });
    mounts.push(m);
    sh(`mkdir ${m.mountpoint}/many && cd ${m.mountpoint}/many && for i in $(seq 1 300); do echo $i > f$i; done`, 60);
    flush(m);
    const keys = Array.from({ length: 300 }, (_, i) => `many/f${i + 1}`);
    expect(await present(keys)).toHaveLength(300);
    const before = requests().length;
    sh(`rm ${m.mountpoint}/many/f*`, 60);
    expect(sh(`ls -A ${m.mountpoint}/many`)).toBe('');
    await waitFor('the deletes to reach the server', async () => (await present(keys)).length === 0);
    const sent = requests().slice(before);
    expect(sent.filter((l) => l.startsWith('DELETE '))).toEqual([]);
    const batches = sent.filter((l) => /^POST \S*\?delete/.test(l));
    expect(batches.length).toBeGreaterThan(0);
    expect(batches.length).toBeLessThan(10); // one per 200 ms of rm at most, never one per file
    // The directory's marker is still there: rmdir removes it, journaled and batched as a file's delete is.
    const beforeRmdir = requests().length;
    sh(`rmdir ${m.mountpoint}/many`);
    await waitFor('the marker\'s delete to reach the server', async () => (await s3.head(BUCKET, 'many/')) === null);
    expect(requests().slice(beforeRmdir).filter((l) => l.startsWith('DELETE '))).toEqual([]);
    await m.stop();
  });

  it('rm -r of a tree: one LIST per directory, and every delete (files and markers) in DeleteObjects batches', async () => {
    const m = await mount({ endpoint, bucket: BUCKET });
    mounts.push(m);
    sh(`mkdir ${m.mountpoint}/tree && cd ${m.mountpoint}/tree && for d in $(seq 1 20); do mkdir -p d$d/e && echo $d > d$d/a && echo $d > d$d/e/b; done`, 60);
    flush(m);
    const keys = ['tree/', ...Array.from({ length: 20 }, (_, i) => [`tree/d${i + 1}/`, `tree/d${i + 1}/a`, `tree/d${i + 1}/e/`, `tree/d${i + 1}/e/b`]).flat()];
    expect(await present(keys)).toHaveLength(keys.length);
    const before = requests().length;
    sh(`rm -r ${m.mountpoint}/tree`, 60);
    expect(sh(`ls -A ${m.mountpoint}`)).not.toMatch(/\btree\b/);
    await waitFor('the deletes to reach the server', async () => (await present(keys)).length === 0);
    const sent = requests().slice(before);
    expect(sent.filter((l) => l.startsWith('DELETE '))).toEqual([]);
    // 41 directories: each rmdir lists what is left under it (skipping what is being deleted), nothing more.
    expect(sent.filter((l) => l.startsWith('GET ') && l.includes('list-type=2') && !l.includes('delimiter=')).length).toBe(41);
    expect(sent.filter((l) => /^POST \S*\?delete/.test(l)).length).toBeLessThan(10);
    // Listed again from the server, the tree stays gone.
    sh(`${process.execPath} ${BIN} refresh ${m.mountpoint}`, 30);
    expect(sh(`ls -A ${m.mountpoint}`)).not.toMatch(/\btree\b/);
    await m.stop();
  });

  it('kill -9 right after rm: the next mount hides the names and sends their deletes', async () => {
    let m = await mount({ endpoint, bucket: BUCKET });
    mounts.push(m);
    sh(`mkdir ${m.mountpoint}/k ${m.mountpoint}/k2 && echo x > ${m.mountpoint}/k2/x && cd ${m.mountpoint}/k && for i in $(seq 1 20); do echo $i > f$i; done`, 60);
    flush(m);
    const keys = [...Array.from({ length: 20 }, (_, i) => `k/f${i + 1}`), 'k2/x', 'k2/'];
    // No journaled delete can go: the kill follows the rm within the same shell, long before the 200 ms batch.
    sh(`rm ${m.mountpoint}/k/f* && rm -r ${m.mountpoint}/k2 && kill -9 ${m.child.pid}`, 60);
    await m.stop('SIGKILL');
    expect(await present(keys)).toHaveLength(22);
    m = await mount({ endpoint, bucket: BUCKET, vault: m.vault });
    mounts.push(m);
    expect(sh(`ls -A ${m.mountpoint}/k`)).toBe('');
    expect(sh(`ls -A ${m.mountpoint}`)).not.toMatch(/\bk2\b/);
    await waitFor('the deletes left by the killed mount', async () => (await present(keys)).length === 0);
    expect(m.output()).toMatch(/sending deletes an earlier run left journaled/);
    await m.stop();
  });
});
