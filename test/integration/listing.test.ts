/**
 * Directory listings handed to the kernel: READDIRPLUS gives `ls -l` the attributes a look-up would (checked
 * against what was stored, with the kernel's caches dropped so the listing path is the one answering), and
 * --listing-attributes shows listed files with the listing's size and time until they are opened.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh, shResult } from '../helpers/sh.js';

const BUCKET = 'listing-test';
let s3: TestServer;
let m: TestMount | undefined;

const FILES = [
  { name: 'a.sh', mode: 0o755, uid: 1001, gid: 1002, mtime: 1_600_000_000, body: '#!/bin/sh\n' },
  { name: 'b.txt', mode: 0o600, uid: 0, gid: 0, mtime: 1_500_000_000, body: 'secret\n' },
  { name: 'c.dat', mode: 0o640, uid: 42, gid: 43, mtime: 1_700_000_000, body: 'x'.repeat(3000) },
];

/** A directory of many pages of READDIRPLUS, each file with attributes of its own. */
const MANY = 400;
const manyMeta = (i: number) => ({ mode: String(0o100000 | [0o644, 0o600, 0o755, 0o640][i % 4]!), uid: String(1000 + (i % 7)), gid: String(2000 + (i % 5)), mtime: String(1_600_000_000 + i * 1000) });

const dropCaches = () => writeFileSync('/proc/sys/vm/drop_caches', '3');

/** `ls -ln` lines as name → "mode uid gid size mtime" (mode as ls prints it). */
function lsTable(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of sh(`ls -ln --time-style=+%s ${dir}`, 30).split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 7) out[f[6]!] = `${f[0]} ${f[2]} ${f[3]} ${f[4]} ${f[5]}`;
  }
  return out;
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  for (const f of FILES) await s3.put(BUCKET, `d/${f.name}`, f.body, { mode: String(0o100000 | f.mode), uid: String(f.uid), gid: String(f.gid), mtime: String(f.mtime) });
  await s3.put(BUCKET, 'd/sub/inner.txt', 'inner\n');
  for (let i = 0; i < MANY; i++) await s3.put(BUCKET, `many/f${String(i).padStart(4, '0')}`, 'x'.repeat(i % 50), manyMeta(i));
});

afterAll(async () => {
  await m?.stop();
  await s3?.stop();
});

describe('listings handed to the kernel', () => {
  it('ls -l after the kernel forgot everything shows exactly the stored attributes (READDIRPLUS path)', async () => {
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    const want = { 'a.sh': '-rwxr-xr-x 1001 1002 10 1600000000', 'b.txt': '-rw------- 0 0 7 1500000000', 'c.dat': '-rw-r----- 42 43 3000 1700000000' };
    // Cold: every file is looked up (HEAD); the answers are kept with the stored listing.
    expect(lsTable(`${m.mountpoint}/d`)).toMatchObject(want);
    // The kernel forgets its dentries and attributes: the next listing hands them over with the names.
    dropCaches();
    const warm = lsTable(`${m.mountpoint}/d`);
    expect(warm).toMatchObject(want);
    expect(warm.sub).toMatch(/^d/);
    // And what the kernel was given agrees with a look-up of each file.
    for (const f of FILES) expect(sh(`stat -c '%a %u %g %s %Y' ${m.mountpoint}/d/${f.name}`).trim()).toBe(`${f.mode.toString(8)} ${f.uid} ${f.gid} ${f.body.length} ${f.mtime}`);
    await m.stop();
    m = undefined;
  });

  it('a cold ls -l of a directory of many files (pages of the listing, windows of prefetched HEADs): every file shows its own stored attributes', async () => {
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    dropCaches();
    const got = lsTable(`${m.mountpoint}/many`);
    expect(Object.keys(got)).toHaveLength(MANY);
    const perms = ['-rw-r--r--', '-rw-------', '-rwxr-xr-x', '-rw-r-----'];
    for (let i = 0; i < MANY; i++) {
      const meta = manyMeta(i);
      expect(got[`f${String(i).padStart(4, '0')}`], `f${i}`).toBe(`${perms[i % 4]} ${meta.uid} ${meta.gid} ${i % 50} ${meta.mtime}`);
    }
    // The kernel forgets what it was handed (its references given back), then looks the files up again.
    dropCaches();
    const last = manyMeta(MANY - 1);
    expect(sh(`stat -c '%a %u %g %s %Y' ${m.mountpoint}/many/f0399`).trim()).toBe(`640 ${last.uid} ${last.gid} 49 ${last.mtime}`);
    expect(lsTable(`${m.mountpoint}/many`)).toEqual(got);
    await m.stop();
    m = undefined;
  });

  it('a directory renamed while a look-up listing of its parent is under way is gone from its old name (mkdir takes it)', async () => {
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    // In the mount's root, with names that sort before its other entries (d/, many/): the listing's one page has
    // passed them, so it answers their look-ups itself.
    const w = m.mountpoint;
    const flush = () => sh(`${process.execPath} ${BIN} flush --wait ${w}`, 120);
    const mine = () => sh(`ls ${w}`).split('\n').filter((n) => n === 'aold' || n === 'anew');
    // Look-ups in the root (from the third, it is listed: one page, which later look-ups are answered from).
    sh(`mkdir ${w}/agone && echo b > ${w}/agone/b`);
    flush();
    sh(`rm -r ${w}/agone`);
    flush();
    sh(`mkdir ${w}/aold && chmod 700 ${w}/aold && touch -d 2001-01-01 ${w}/aold`);
    sh(`mv ${w}/aold ${w}/anew`);
    expect(shResult(`mkdir ${w}/aold`).stderr).toBe('');
    expect(sh(`stat -c '%a' ${w}/aold ${w}/anew`)).toBe('755\n700\n');
    // Once the kernel's and the mount's memory of the names has expired: still the two directories.
    sh('sleep 6');
    expect(mine()).toEqual(['anew', 'aold']);
    expect(sh(`stat -c '%a' ${w}/aold ${w}/anew`)).toBe('755\n700\n');
    await m.stop();
    m = undefined;
  });

  it('--listing-attributes: listed files show the listing size and time until opened, then their own metadata', async () => {
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--listing-attributes'] });
    const listed = lsTable(`${m.mountpoint}/d`);
    // Default mode and the mounting user; the size is right; the time is the object's LastModified (now-ish).
    expect(listed['a.sh']).toMatch(/^-rw-r--r-- \d+ \d+ 10 \d+$/);
    expect(Math.abs(Number(listed['a.sh']!.split(' ')[4]) - Date.now() / 1000)).toBeLessThan(600);
    // Opening the file reads its metadata; the kernel's attributes expire after 1 s.
    expect(sh(`cat ${m.mountpoint}/d/a.sh`)).toBe('#!/bin/sh\n');
    sh('sleep 1.2');
    expect(sh(`stat -c '%a %u %g %Y' ${m.mountpoint}/d/a.sh`).trim()).toBe('755 1001 1002 1600000000');
  });
});
