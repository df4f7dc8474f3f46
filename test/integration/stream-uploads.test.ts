/**
 * Stream uploads through a real mount on s3rver: a large file written in pieces goes to S3 part by part while it
 * is written, and its upload completes with those parts; an mtime set after the data (cp -p, touch) makes it
 * go whole with that mtime.
 */
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cliEnv, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh } from '../helpers/sh.js';

const MiB = 1024 * 1024;
const BUCKET = 'stream-test';
let s3: TestServer;
let m: TestMount | undefined;
let dir: string;
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

function flush(mp: string): void {
  const r = spawnSync(process.execPath, [BIN, 'flush', '--wait', mp], { env: cliEnv(), encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
}

/** Copy `src` onto the mount in 8 MiB pieces with pauses, as a slow writer would (the stream sends behind it). */
function slowCopy(src: string, dst: string, pieces: number): void {
  sh(`(for i in $(seq 0 ${pieces - 1}); do dd if=${src} bs=8M skip=$i count=1 status=none; sleep 0.4; done) > ${dst}`, 120);
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-stream-it-'));
  m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--stream-uploads', '--verbose', '--flush-delay', '60000'] });
});

afterAll(async () => {
  await m?.stop();
  await s3?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('stream uploads through a mount', () => {
  it('sends the parts of a file while it is written; the object is exact and carries no mtime header', async () => {
    const data = randomBytes(48 * MiB);
    writeFileSync(path.join(dir, 'src.bin'), data);
    slowCopy(path.join(dir, 'src.bin'), `${m!.mountpoint}/big.bin`, 6);
    flush(m!.mountpoint);
    expect(md5(await s3.get(BUCKET, 'big.bin'))).toBe(md5(data));
    const head = await s3.head(BUCKET, 'big.bin');
    expect(head?.meta.mode).toBe('33188');
    expect(head?.meta.mtime).toBeUndefined();
    // The upload at close kept parts the stream had sent while the file was written.
    const kept = [...m!.output().matchAll(/"key":"big\.bin","kept":(\d+)/g)].map((x) => Number(x[1]));
    expect(kept.length).toBe(1);
    expect(kept[0]).toBeGreaterThanOrEqual(3);
    // The mount still shows the file's own mtime, that of its last write.
    const mtime = Number(sh(`stat -c %Y ${m!.mountpoint}/big.bin`).trim());
    expect(Math.abs(mtime - Date.now() / 1000)).toBeLessThan(120);
  });

  it('an mtime set after the data (touch -d, as cp -p does) sends the file whole with that mtime', async () => {
    const data = randomBytes(40 * MiB);
    writeFileSync(path.join(dir, 'src2.bin'), data);
    slowCopy(path.join(dir, 'src2.bin'), `${m!.mountpoint}/dated.bin`, 5);
    sh(`touch -d '2020-01-02 03:04:05 UTC' ${m!.mountpoint}/dated.bin`);
    flush(m!.mountpoint);
    expect(md5(await s3.get(BUCKET, 'dated.bin'))).toBe(md5(data));
    expect((await s3.head(BUCKET, 'dated.bin'))?.meta.mtime).toBe('1577934245');
    expect(m!.output()).not.toMatch(/"key":"dated\.bin","kept"/);
  });
});
