/**
 * The randomized model test: thousands of random operations (create, write at random offsets, append, truncate,
 * rename, unlink, mkdir, rmdir, chmod, symlink, read) applied to a real mount and to a local reference directory,
 * the two trees compared after every step, again after a remount on the same vault, and again through a fresh
 * vault (everything read back from S3). The second case applies a quarter as many with the server stopped (a tree
 * made through the mount first), then compares what S3 holds once the server is back. MODEL_SEED / MODEL_OPS
 * override the seed and the count; the seed is printed, and a failure names the step and the operation.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { shAsync } from '../helpers/sh.js';
import { scratchDir } from '../helpers/scratch.js';
import { startEmbeddedServer } from '../../src/storage/embedded-server.js';

const BUCKET = 'model-test';
const RUNNER = fileURLToPath(new URL('../helpers/model-run.mjs', import.meta.url));
const SEED = Number(process.env.MODEL_SEED ?? Math.floor(Math.random() * 1e9));
const OPS = Number(process.env.MODEL_OPS ?? 1500);
let s3: TestServer;
let m: TestMount | undefined;
let ref: string;

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  // Links moved by renames can point one level above the root ('../b'): the reference's parent is as private and
  // empty as the mountpoint's (the mount helper's scratch directory), so such writes land alike on both sides.
  ref = path.join(scratchDir('model-ref'), 'root');
  mkdirSync(ref);
});

afterAll(async () => {
  await m?.stop();
  await s3?.stop();
});

/** Run the worker without blocking this process, so the mount's log keeps flowing into m.output(). */
async function runner(args: string, timeoutSec: number): Promise<string> {
  try {
    return await shAsync(`${process.execPath} ${RUNNER} ${args} 2>&1`, timeoutSec);
  } catch (err) {
    const log = m?.output().split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(-10).join('\n');
    throw new Error(`model test failed (MODEL_SEED=${SEED} MODEL_OPS=${OPS} reproduce it):\n${(err as Error).message}\nmount log (warnings, errors):\n${log}`);
  }
}

describe('randomized model test', () => {
  it(`applies ${OPS} random operations to the mount and to a local directory, equal after every step and after remounts (seed ${SEED})`, async () => {
    console.log(`model test: MODEL_SEED=${SEED} MODEL_OPS=${OPS}`);
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--flush-delay', '300'] });
    const out = await runner(`apply ${m.mountpoint} ${ref} ${SEED} ${OPS}`, 900);
    console.log(out.trim());
    expect(out).toContain(`ok ${OPS} ops`);
    // The same vault after an unmount (flush) and a mount.
    const vault = m.vault;
    await m.stop();
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault });
    expect(await runner(`compare ${m.mountpoint} ${ref}`, 300)).toContain('ok trees equal');
    await m.stop();
    // A fresh vault: every byte, mode and link comes back from S3.
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    expect(await runner(`compare ${m.mountpoint} ${ref}`, 300)).toContain('ok trees equal');
  }, 1_200_000);

  // Keep working while the network is gone: every operation of the mix works with the server stopped on a tree the
  // vault holds (made through the mount), and S3 ends up with that tree once the server is back.
  it(`applies random operations with the server stopped, then S3 holds the same tree (seed ${SEED})`, async () => {
    const offlineOps = Math.max(100, Math.round(OPS / 4));
    console.log(`offline model test: MODEL_SEED=${SEED} MODEL_OPS=${OPS} (${offlineOps} offline)`);
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 's3vault-model-offline-s3-'));
    let server = await startEmbeddedServer({ dataDir, buckets: ['model-offline'] });
    const port = server.port;
    const offlineRef = path.join(scratchDir('model-offline-ref'), 'root');
    mkdirSync(offlineRef);
    try {
      m = await mount({ endpoint: server.endpoint, bucket: 'model-offline', extraArgs: ['--flush-delay', '300'] });
      expect(await runner(`apply ${m.mountpoint} ${offlineRef} ${SEED + 1} ${offlineOps}`, 600)).toContain(`ok ${offlineOps} ops`);
      await shAsync(`${process.execPath} ${BIN} flush --wait ${m.mountpoint}`, 120);
      await server.stop();
      // Renames of files and directories, chmod, mkdir over a removed name, rmdir: before, EIO (or a wait for the
      // server) offline.
      const out = await runner(`apply ${m.mountpoint} ${offlineRef} ${SEED + 2} ${offlineOps}`, 600);
      console.log(out.trim());
      expect(out).toContain(`ok ${offlineOps} ops`);
      server = await startEmbeddedServer({ dataDir, port });
      await shAsync(`${process.execPath} ${BIN} flush --wait ${m.mountpoint}`, 120);
      await m.stop();
      // A fresh vault: the tree as S3 has it.
      m = await mount({ endpoint: server.endpoint, bucket: 'model-offline' });
      expect(await runner(`compare ${m.mountpoint} ${offlineRef}`, 300)).toContain('ok trees equal');
    } finally {
      await m?.stop();
      m = undefined;
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 1_200_000);
});
