/**
 * File data under random operations (test/helpers/fsx.c, in the spirit of fsx): writes and reads at unaligned
 * offsets across blocks, appends through a second descriptor, reads by a descriptor opened afresh, mmap reads and
 * writes, truncates, fallocate (grow, keep size, punch hole, zero range), copy_file_range, fsync, dropped page
 * caches and reopens, each read checked against what the file must hold. Then the object in S3 must hold exactly
 * the file's last bytes, and so must a fresh mount reading it from S3. Mounts:
 * - the default (FUSE passthrough for files all in the vault);
 * - uploading and evicting while the file is used (short flush delay, a vault smaller than the files, pauses with
 *   the file closed), with files of up to 4 MiB and of up to 24 MiB (multipart uploads, streamed or not);
 * - a file that starts as an object the vault does not hold (its blocks fetched as they are used, partial writes
 *   of absent blocks), in a vault smaller than it;
 * - killed (SIGKILL) right after the last close, or right after an fsync with the file still open: the same vault,
 *   mounted again, must hold and upload the last bytes;
 * - through a proxy that fails requests now and then (503, 500, resets) while uploads run, and so with renames;
 * - without passthrough, where every read and write goes through s3vault; and so with four files at once in a
 *   vault smaller than two of them;
 * - with the file renamed away and back now and then, open or closed (with and without passthrough; and with files
 *   of up to 24 MiB, whose multipart objects' copies get new ETags).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh, shAsync } from '../helpers/sh.js';
import { startFaultProxy, type FaultMode } from '../helpers/fault-proxy.js';
import { scratchDir } from '../helpers/scratch.js';
import { buildCHelper } from '../helpers/c-helper.js';

const BUCKET = 'fsx-test';
let FSX: string;
const MiB = 1024 * 1024;
const MAXLEN = 4 * MiB;
let s3: TestServer;

beforeAll(async () => {
  FSX = buildCHelper('fsx');
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
});

afterAll(async () => {
  await s3?.stop();
});

/** How a run ends: flushed and unmounted; or s3vault killed (SIGKILL), nothing flushed, after fsx's last close or
 * after its last fsync with the file still open. */
type End = 'unmount' | 'kill after close' | 'kill after fsync';

/**
 * Run fsx without blocking this process (a fault proxy in it must keep forwarding). Resolves with its output when
 * it exits, or — with `hold` (-k) — once it has synced and waits with the file open; the child is then the
 * caller's to kill.
 */
function runFsx(args: string, hold: boolean): Promise<{ out: string; child: ChildProcess }> {
  return new Promise((resolve) => {
    // Its own process group: `timeout` and fsx go together when the caller kills it (see killFsx).
    const child = spawn('timeout', ['-k', '5', '300', 'bash', '-c', `exec ${FSX}${hold ? ' -k' : ''} ${args}`], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (hold && /^ok .*\n/.test(out)) resolve({ out, child });
    });
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('exit', (code) => resolve({ out: code === 124 ? `${out}\nfsx timed out (hung mount?)` : out, child }));
  });
}

/** Kill a held fsx: the whole group (a signal to `timeout` alone would leave fsx waiting on a dead mount). */
function killFsx(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // already gone
  }
}

interface Run {
  /** fsx's seeds, one file each. */
  seeds: number[];
  ops: number;
  /** How long some reopens wait with the file closed (with a short flush delay: its upload runs meanwhile). */
  pauseMs?: number;
  flags?: string[];
  end?: End;
  /** The largest the file gets. */
  maxlen?: number;
  /** Each file starts as an object of this many random bytes, put in S3 before the mount (not in its vault). */
  initial?: number;
  /** The mount reaches S3 through a proxy that fails some requests while fsx runs (none during the flush). */
  flaky?: boolean;
  /** All seeds run at once (each file's uploads and evictions then fall amid the others' operations). */
  together?: boolean;
  /** fsx -r: half its reopens rename the file away (FILE.mv) and back instead, open or closed. */
  renames?: boolean;
}

async function exercise(name: string, { seeds, ops, pauseMs = 0, flags = [], end = 'unmount', maxlen = MAXLEN, initial, flaky, together, renames }: Run): Promise<void> {
  const expected = scratchDir(`fsx-expected-${name}`);
  const crash = end !== 'unmount';
  const start = initial === undefined ? undefined : scratchDir(`fsx-initial-${name}`);
  for (const seed of start ? seeds : []) {
    const bytes = randomBytes(initial!);
    writeFileSync(`${start}/${seed}`, bytes);
    await s3.put(BUCKET, `${name}/f${seed}`, bytes);
  }
  const proxy = flaky ? await startFaultProxy(s3.server.port) : undefined;
  // Mostly passing; now and then a stretch of 503s, 500s or reset connections (the SDK's retries, the write-back
  // queue's backoff, and uploads the file changed under meet them).
  const faults: FaultMode[] = ['pass', 'pass', 'pass', 'pass', 'pass', 'pass', 'slowdown', 'error500', 'reset'];
  let turn = 0;
  const flakes = proxy && setInterval(() => proxy.setMode(faults[turn++ % faults.length]), 150);
  const m = await mount({ endpoint: proxy?.endpoint ?? s3.endpoint, bucket: BUCKET, extraArgs: flags });
  const held: ChildProcess[] = [];
  try {
    await shAsync(`mkdir -p ${m.mountpoint}/${name}`);
    const one = async (seed: number): Promise<void> => {
      const args = `${renames ? '-r ' : ''}-e ${expected}/${seed}${start ? ` -i ${start}/${seed}` : ''} ${m.mountpoint}/${name}/f${seed} ${seed} ${ops} ${maxlen} ${pauseMs}`;
      const { out, child } = await runFsx(args, end === 'kill after fsync');
      if (end === 'kill after fsync') held.push(child);
      // fsx prints the failing operation and the ones before it: the message a failure needs.
      expect(out, `fsx seed ${seed} on the ${name} mount`).toMatch(new RegExp(`^ok ${ops} ops`));
    };
    if (together) {
      // Every run to its end before judging (a failed one must not leave others writing into the unmount).
      const results = await Promise.allSettled(seeds.map(one));
      for (const r of results) if (r.status === 'rejected') throw r.reason;
    } else for (const seed of seeds) await one(seed);
    clearInterval(flakes);
    proxy?.setMode('pass');
    if (!crash) await shAsync(`${process.execPath} ${BIN} flush --wait ${m.mountpoint}`, 120);
  } finally {
    clearInterval(flakes);
    if (crash) await m.stop('SIGKILL');
    else expect(await m.stop()).toBe(0);
    for (const c of held) killFsx(c);
    await proxy?.close();
  }
  if (crash) {
    const again = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault: m.vault });
    try {
      for (const seed of seeds) sh(`cmp ${expected}/${seed} ${again.mountpoint}/${name}/f${seed}`, 120);
      sh(`${process.execPath} ${BIN} flush --wait ${again.mountpoint}`, 120);
    } finally {
      expect(await again.stop()).toBe(0);
    }
  }
  // Only the files (and the directory's marker): no object left under a name one had for a while, or by an upload
  // a rename overtook.
  expect((await s3.list(BUCKET, `${name}/`)).filter((k) => !k.endsWith('/')).sort()).toEqual(seeds.map((s) => `${name}/f${s}`).sort());
  for (const seed of seeds) {
    const want = readFileSync(`${expected}/${seed}`);
    const got = await s3.get(BUCKET, `${name}/f${seed}`);
    expect(got.length, `size of ${name}/f${seed} in S3`).toBe(want.length);
    expect(got.equals(want), `bytes of ${name}/f${seed} in S3`).toBe(true);
  }
  const fresh = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault: path.join(scratchDir(`fsx-fresh-${name}`), 'vault') });
  try {
    for (const seed of seeds) sh(`cmp ${expected}/${seed} ${fresh.mountpoint}/${name}/f${seed}`, 120);
  } finally {
    await fresh.stop();
  }
}

describe('file data under random operations (fsx)', () => {
  it('default mount: every read agrees, and S3 gets the last bytes', async () => {
    // Seed 1 failed before passthrough writes were taken in ahead of fallocate: a fallocate that grew the file
    // from the vault's stale size cut off what the kernel had written past it (at op 1355, fstat said 3031919
    // bytes, not 4194304; seeds 4-6 failed the same way, two of them with SIGBUS in a mapping past the new end).
    await exercise('default', { seeds: [1, 2], ops: 3000 });
  });

  it('uploads and evictions while the file is used: every read agrees, and S3 gets the last bytes', async () => {
    await exercise('evicting', { seeds: [3, 4], ops: 1200, pauseMs: 300, flags: ['--flush-delay', '100', '--cache-size', '6M'] });
  });

  it('files of up to 24 MiB (multipart uploads, ranged fetches), uploading and evicting: every read agrees', async () => {
    // Seeds 601 and 602 failed before an upload that ended after the file was cut and grown back stopped raising
    // the fetch limit: the file's zeros were then fetched from the new object, which held the old bytes there.
    await exercise('large', { seeds: [601, 602], ops: 1200, pauseMs: 200, flags: ['--flush-delay', '50', '--cache-size', '16M'], maxlen: 24 * MiB });
  });

  it('the same with --stream-uploads (parts sent while the file is written)', async () => {
    await exercise('large-stream', { seeds: [603], ops: 1000, pauseMs: 200, flags: ['--flush-delay', '50', '--cache-size', '40M', '--stream-uploads'], maxlen: 24 * MiB });
  });

  it('files that start as objects not in the vault (lazy fetches, partial writes of absent blocks), evicting', async () => {
    await exercise('remote', { seeds: [904], ops: 1500, flags: ['--cache-size', '8M'], maxlen: 24 * MiB, initial: 20_000_000 });
  });

  it('through a server that fails requests now and then (503, 500, resets), uploading meanwhile', async () => {
    await exercise('flaky', { seeds: [10, 11], ops: 1200, pauseMs: 200, flags: ['--flush-delay', '50'], maxlen: 24 * MiB, flaky: true });
  });

  it('kill -9 right after the last close: the same vault, mounted again, holds and uploads the last bytes', async () => {
    await exercise('crash', { seeds: [6, 7], ops: 1500, end: 'kill after close' });
  });

  it('kill -9 right after an fsync, the file still open: the same vault, mounted again, holds and uploads those bytes', async () => {
    await exercise('crash-open', { seeds: [8, 9], ops: 1500, end: 'kill after fsync' });
  });

  it('without passthrough (every read and write through s3vault), uploading and evicting too', async () => {
    await exercise('no-passthrough', { seeds: [5], ops: 1500, pauseMs: 300, flags: ['--flush-delay', '100', '--cache-size', '6M', '--no-passthrough'] });
  });

  it('four files at once without passthrough, in a vault smaller than two of them: each evicts the others\' blocks', async () => {
    // Seed 1203 failed about one run in six (at op 89 or op 54: a write's bytes read back as zeros) before a commit
    // stopped journaling as clean the blocks evicted after it listed them: an eviction between an upload's end and
    // its batched commit left the journal saying "clean" over a punched hole, so the file read zeros there after
    // its next open, and its next upload sent them. (Without passthrough, open files' clean blocks are evicted.)
    await exercise('together', { seeds: [1201, 1202, 1203, 1204], ops: 300, pauseMs: 200, flags: ['--flush-delay', '50', '--cache-size', '6M', '--no-passthrough'], together: true });
  });

  it('four files at once renamed away and back, open (written under the other name) or closed (uploaded meanwhile)', async () => {
    // Before writes held their blocks against eviction, seed 2003 failed in half the runs (at op 461: a read of
    // zeros where a write's read-modify-write had fetched the old bytes, evicted before the write marked them dirty).
    await exercise('renames', { seeds: [2001, 2002, 2003, 2004], ops: 800, pauseMs: 200, flags: ['--flush-delay', '50', '--cache-size', '6M'], renames: true, together: true });
  });

  it('the same without passthrough', async () => {
    // Seed 2101 failed the same way in three runs of four (at op 485 or at its final read).
    await exercise('renames-np', { seeds: [2101, 2102, 2103, 2104], ops: 800, pauseMs: 200, flags: ['--flush-delay', '50', '--cache-size', '6M', '--no-passthrough'], renames: true, together: true });
  });

  it('three files at once renamed away and back through a server that fails requests now and then: a failed copy moves the file locally', async () => {
    // The vault holds the files whole, so a rename whose copy fails (after the SDK's retries, or while the mount
    // holds storage for offline) moves the file as a changed one. Before, such a rename failed with EIO (two runs of
    // two); and one run in eight failed before a copy whose answer was lost had what it left under the new name
    // deleted (f4611.mv and f4612.mv stayed in S3).
    await exercise('flaky-renames', { seeds: [4611, 4612, 4613], ops: 600, pauseMs: 200, flags: ['--flush-delay', '50', '--cache-size', '64M', '--no-passthrough'], flaky: true, renames: true, together: true });
  });

  it('three files of up to 24 MiB at once renamed away and back, without passthrough (a multipart object\'s copy has a new ETag)', async () => {
    // Failed in five runs of five before a rename held the uploads of both names and rebased a file written during
    // its copy onto the copy: a conflict copy left in S3 (FILE.mv.conflict-…), or EIO where the record's object had
    // been deleted under it.
    await exercise('renames-large', { seeds: [3221, 3222, 3223], ops: 600, pauseMs: 200, flags: ['--flush-delay', '50', '--cache-size', '16M', '--no-passthrough'], maxlen: 24 * MiB, renames: true, together: true });
  });
});
