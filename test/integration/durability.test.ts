/**
 * Never lose an acknowledged byte. Writers copy files into a real mount and log each file once close()
 * returned for it; s3vault is killed with SIGKILL at random moments, or its network misbehaves, or the
 * server goes away; afterwards every acknowledged file must be in the mount and then in S3, byte for byte.
 * Seeds are printed on failure: KILL_SEED=<seed> KILL_ITERATIONS=<n> reproduce a run.
 */
import { createHash } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, forceUnmount, isMounted, mount, type TestMount } from '../helpers/mount.js';
import { startFaultProxy, type FaultMode } from '../helpers/fault-proxy.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh, shAsync, shResult } from '../helpers/sh.js';
import { startEmbeddedServer } from '../../src/storage/embedded-server.js';

const BUCKET = 'durable';
const KILL_ITERATIONS = Number(process.env.KILL_ITERATIONS ?? 5);
let s3: TestServer;
let work: string;
const mounts: TestMount[] = [];

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WRITER = `
w=$1; dir=$2; ack=$3; tmp=$(mktemp -d -p "$(dirname "$ack")"); i=0
while [ $i -lt 400 ]; do
  i=$((i+1))
  n=$(( (RANDOM % 48 + 1) * 1024 + RANDOM % 1000 ))
  [ $((RANDOM % 25)) -eq 0 ] && n=$(( (RANDOM % 3 + 1) * 1048576 + RANDOM ))
  head -c $n /dev/urandom > $tmp/src
  if [ $((i % 3)) -eq 0 ]; then
    dd if=$tmp/src of=$dir/$w-$i bs=64k conv=fsync status=none 2>/dev/null || break
  else
    cp $tmp/src $dir/$w-$i 2>/dev/null || break
  fi
  echo "$w-$i $(md5sum < $tmp/src | cut -c1-32)" >> $ack
done
rm -rf $tmp`;

function startWriters(dir: string, ack: string, count: number): ChildProcess[] {
  return Array.from({ length: count }, (_, i) => spawn('bash', ['-c', WRITER, 'writer', `w${i}`, dir, ack], { stdio: 'ignore' }));
}

function acked(ack: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(ack)) return out;
  for (const line of readFileSync(ack, 'utf8').split('\n')) {
    const [name, sum] = line.trim().split(' ');
    if (name && sum?.length === 32) out.set(name, sum);
  }
  return out;
}

/** Every acknowledged file under dir in the mount has its content (one md5sum run for all). */
async function checkMount(mp: string, dir: string, files: Map<string, string>, seed: string): Promise<void> {
  if (!files.size) return;
  const names = [...files.keys()];
  const out = await shAsync(`cd ${mp}/${dir} && md5sum ${names.join(' ')}`, 300);
  const got = new Map(out.trim().split('\n').map((l) => [l.split(/\s+/)[1]!, l.split(' ')[0]!]));
  for (const [name, sum] of files) expect(got.get(name), `${dir}/${name} in the mount (${seed})`).toBe(sum);
}

async function checkS3(dir: string, files: Map<string, string>, seed: string): Promise<void> {
  for (const [name, sum] of files) {
    const body = await s3.get(BUCKET, `${dir}/${name}`).catch(() => Buffer.alloc(0));
    expect(createHash('md5').update(body).digest('hex'), `${dir}/${name} in S3 (${seed})`).toBe(sum);
  }
}

const flushMount = (mp: string) => shAsync(`${process.execPath} ${BIN} flush --wait ${mp}`, 300);

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  work = mkdtempSync(path.join(os.tmpdir(), 's3vault-durable-'));
});

afterAll(async () => {
  for (const m of mounts) await m.stop().catch(() => undefined);
  await s3?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('durability', () => {
  it('kill -9 at random moments while writers run: every acknowledged byte survives, in the mount and then in S3', async () => {
    const seed = Number(process.env.KILL_SEED ?? Math.floor(Math.random() * 1e6));
    const iterations = KILL_ITERATIONS;
    const label = `KILL_SEED=${seed} KILL_ITERATIONS=${iterations}`;
    const random = rng(seed);
    const vault = path.join(work, 'kill-vault');
    const all = new Map<string, Map<string, string>>();
    process.stderr.write(`durability: ${label}\n`);
    for (let it = 0; it < iterations; it++) {
      const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault, extraArgs: ['--flush-delay', String(Math.floor(random() * 1500))] });
      mounts.push(m);
      // Everything acknowledged in earlier rounds is here after the crash and restart.
      for (const [dir, files] of all) await checkMount(m.mountpoint, dir, files, label);
      const dir = `round${it}`;
      sh(`mkdir -p ${m.mountpoint}/${dir}`);
      const ack = path.join(work, `ack-${it}`);
      const writers = startWriters(`${m.mountpoint}/${dir}`, ack, 3);
      await new Promise((r) => setTimeout(r, 300 + Math.floor(random() * 2500)));
      m.child.kill('SIGKILL');
      await new Promise((r) => (m.child.exitCode !== null || m.child.signalCode !== null ? r(null) : m.child.once('exit', r)));
      for (const w of writers) w.kill('SIGKILL');
      forceUnmount(m.mountpoint);
      all.set(dir, acked(ack));
    }
    const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault });
    mounts.push(m);
    let total = 0;
    for (const [dir, files] of all) {
      await checkMount(m.mountpoint, dir, files, label);
      total += files.size;
    }
    await flushMount(m.mountpoint);
    for (const [dir, files] of all) await checkS3(dir, files, label);
    process.stderr.write(`durability: ${iterations} kills, ${total} acknowledged files checked in the mount and in S3 (${label})\n`);
    expect(total).toBeGreaterThan(iterations);
    await m.stop();
  }, 60_000 + KILL_ITERATIONS * 15_000);

  it('after kill -9 the same mountpoint mounts again without a manual fusermount3 -uz, and the synced file is there', async () => {
    const mp = path.join(work, 'dead-mp');
    const vault = path.join(work, 'dead-vault');
    try {
      const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault, mountpoint: mp, extraArgs: ['--flush-delay', '60000'] });
      mounts.push(m);
      sh(`head -c 300000 /dev/urandom > ${work}/dead-src && cp ${work}/dead-src ${mp}/synced.bin && sync ${mp}/synced.bin`);
      m.child.kill('SIGKILL');
      await new Promise((r) => (m.child.exitCode !== null || m.child.signalCode !== null ? r(null) : m.child.once('exit', r)));
      // What kill -9 leaves: a mount whose process is gone.
      expect(shResult(`stat ${mp}`).stderr).toContain('Transport endpoint is not connected');
      const again = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault, mountpoint: mp });
      mounts.push(again);
      sh(`cmp ${work}/dead-src ${mp}/synced.bin`, 60);
      await flushMount(mp);
      expect(md5(await s3.get(BUCKET, 'synced.bin'))).toBe(md5(readFileSync(`${work}/dead-src`)));
      await again.stop();
    } finally {
      forceUnmount(mp);
    }
  });

  it("a writer that fills the vault's disk gets ENOSPC; the mount stays up, uploads what it holds, and rm frees the disk", async () => {
    const disk = path.join(work, 'small-disk');
    const mp = path.join(work, 'full-mp');
    sh(`mkdir -p ${disk} && mount -t tmpfs -o size=40m tmpfs ${disk}`);
    try {
      const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault: path.join(disk, 'v'), mountpoint: mp, extraArgs: ['--flush-delay', '60000'] });
      mounts.push(m);
      expect(existsSync(path.join(disk, 'v', 'reserve'))).toBe(true);
      sh(`echo small > ${mp}/keep.txt`);
      const dd = shResult(`dd if=/dev/zero of=${mp}/fill.bin bs=1M count=80`, 60);
      expect(dd.stderr).toContain('No space left on device');
      await new Promise((r) => setTimeout(r, 2500)); // the reserve's check runs every second
      expect(isMounted(mp)).toBe(true);
      expect(sh(`cat ${mp}/keep.txt`)).toBe('small\n');
      await flushMount(mp);
      expect((await s3.get(BUCKET, 'keep.txt')).toString()).toBe('small\n');
      expect(m.output()).toContain("vault disk full: released the vault's reserve");
      sh(`rm ${mp}/fill.bin`, 30);
      expect(sh(`ls ${mp}`)).toContain('keep.txt');
      // The space comes back (the file is not held by a close that failed), and the reserve is made again.
      const free = () => {
        const st = statfsSync(disk);
        return st.bavail * st.bsize;
      };
      for (let i = 0; i < 100 && !(free() > 20 * 2 ** 20 && existsSync(path.join(disk, 'v', 'reserve'))); i++) await new Promise((r) => setTimeout(r, 100));
      expect(free()).toBeGreaterThan(20 * 2 ** 20);
      expect(existsSync(path.join(disk, 'v', 'reserve'))).toBe(true);
      await m.stop();
    } finally {
      forceUnmount(mp);
      spawnSync('umount', ['-l', disk]);
    }
  });

  it('a misbehaving network (delays, resets, drops, 503 SlowDown, 500, outages) loses nothing', async () => {
    const seed = Number(process.env.FAULT_SEED ?? Math.floor(Math.random() * 1e6));
    const label = `FAULT_SEED=${seed}`;
    const random = rng(seed);
    const proxy = await startFaultProxy(s3.server.port);
    const m = await mount({ endpoint: proxy.endpoint, bucket: BUCKET, extraArgs: ['--flush-delay', '100'] });
    mounts.push(m);
    try {
      await shAsync(`mkdir -p ${m.mountpoint}/faulty`);
      const ack = path.join(work, 'ack-fault');
      const writers = startWriters(`${m.mountpoint}/faulty`, ack, 2);
      const modes: FaultMode[] = ['pass', 'delay', 'reset', 'drop', 'slowdown', 'error500', 'down'];
      const end = Date.now() + 6000;
      while (Date.now() < end) {
        proxy.setMode(modes[Math.floor(random() * modes.length)]!);
        await new Promise((r) => setTimeout(r, 200 + Math.floor(random() * 600)));
      }
      for (const w of writers) w.kill('SIGTERM');
      proxy.setMode('pass');
      const files = acked(ack);
      await checkMount(m.mountpoint, 'faulty', files, label);
      await flushMount(m.mountpoint);
      try {
        await checkS3('faulty', files, label);
      } catch (err) {
        process.stderr.write(`s3vault's log:\n${m.output().split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(-40).join('\n')}\n`);
        throw err;
      }
      process.stderr.write(`durability: ${files.size} files written through faults ${JSON.stringify(proxy.stats)} (${label})\n`);
      expect(files.size).toBeGreaterThan(0);
    } finally {
      await m.stop();
      await proxy.close();
    }
  });

  it('SIGTERM while the server hangs waits for the upload; a second SIGTERM unmounts at once, and the next mount uploads what was left', async () => {
    const proxy = await startFaultProxy(s3.server.port);
    const vault = path.join(work, 'vault-second-signal');
    const m = await mount({ endpoint: proxy.endpoint, bucket: BUCKET, vault, extraArgs: ['--flush-delay', '60000'] });
    mounts.push(m);
    const exited = new Promise<void>((r) => m.child.once('exit', () => r()));
    try {
      await shAsync(`mkdir -p ${m.mountpoint}/stuck && head -c 300000 /dev/urandom > ${work}/stuck.bin && cp ${work}/stuck.bin ${m.mountpoint}/stuck/a.bin`);
      // The server takes requests in and never answers: the upload the unmount starts waits for its request
      // timeout (60 s), then retries. (A server that refuses outright sends the mount offline, and the unmount
      // leaves the changes in the vault at once.)
      proxy.setMode('stall');
      m.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 4000));
      expect(m.child.exitCode, 'the first SIGTERM waits for the uploads').toBeNull();
      expect(m.output()).toMatch(/signal again to unmount without waiting/);
      const t0 = Date.now();
      m.child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
      expect(m.child.exitCode, `the second SIGTERM unmounts (log:\n${m.output().slice(-2000)})`).toBe(0);
      expect(Date.now() - t0).toBeLessThan(20_000);
      expect(isMounted(m.mountpoint)).toBe(false);
      expect(m.output()).toMatch(/second signal: unmounting without waiting/);
    } finally {
      await m.stop();
      proxy.setMode('pass');
      await proxy.close();
    }
    // The next mount (straight to the server) finds the file as an orphan and uploads it.
    const again = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault });
    mounts.push(again);
    try {
      expect(again.output()).toMatch(/orphan/);
      await flushMount(again.mountpoint);
      const body = await s3.get(BUCKET, 'stuck/a.bin');
      expect(body.equals(readFileSync(path.join(work, 'stuck.bin')))).toBe(true);
    } finally {
      await again.stop();
    }
  });

  it('offline session: server stopped, edits made, server back, edits in S3', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 's3vault-offline-s3-'));
    let server = await startEmbeddedServer({ dataDir, buckets: ['offline'] });
    const port = server.port;
    const m = await mount({ endpoint: server.endpoint, bucket: 'offline', extraArgs: ['--flush-delay', '100'] });
    mounts.push(m);
    try {
      sh(`mkdir ${m.mountpoint}/docs && echo 'first draft' > ${m.mountpoint}/docs/a.txt && echo old > ${m.mountpoint}/docs/old.txt && echo keep > ${m.mountpoint}/docs/keep.txt && ls -l ${m.mountpoint}/docs`);
      sh(`mkdir -p ${m.mountpoint}/proj/src && echo 'int x;' > ${m.mountpoint}/proj/src/x.c && echo readme > ${m.mountpoint}/proj/README`);
      await flushMount(m.mountpoint);
      await server.stop();
      // Offline: the known file reads, changes and new files are accepted, listings come from the vault.
      expect(sh(`cat ${m.mountpoint}/docs/a.txt`)).toBe('first draft\n');
      sh(`echo 'offline edit' >> ${m.mountpoint}/docs/a.txt`);
      sh(`echo 'written offline' > ${m.mountpoint}/docs/b.txt`);
      sh(`mkdir -m 700 ${m.mountpoint}/docs/made-offline`);
      sh(`rm ${m.mountpoint}/docs/old.txt`);
      sh(`ln -s a.txt ${m.mountpoint}/docs/link`);
      // An uploaded, unchanged file the vault holds whole moves without the server's copy (before: EIO).
      sh(`mv ${m.mountpoint}/docs/keep.txt ${m.mountpoint}/docs/kept.txt`);
      expect(sh(`cat ${m.mountpoint}/docs/kept.txt`)).toBe('keep\n');
      // A scratch tree made and removed offline (a build's temporary directory; before: rmdir was EIO).
      sh(`mkdir -p ${m.mountpoint}/docs/tmp/sub && echo t > ${m.mountpoint}/docs/tmp/sub/t && rm -r ${m.mountpoint}/docs/tmp`);
      // A tree made here renamed offline, with a file in it not uploaded yet (before: EIO).
      sh(`echo 'int y;' > ${m.mountpoint}/proj/src/new.c && mv ${m.mountpoint}/proj ${m.mountpoint}/project`);
      expect(sh(`cat ${m.mountpoint}/project/src/x.c ${m.mountpoint}/project/src/new.c ${m.mountpoint}/project/README`)).toBe('int x;\nint y;\nreadme\n');
      expect(sh(`ls ${m.mountpoint}`).trim().split('\n')).toEqual(['docs', 'project']);
      expect(sh(`readlink ${m.mountpoint}/docs/link`).trim()).toBe('a.txt');
      expect(sh(`ls ${m.mountpoint}/docs`).trim().split('\n').sort()).toEqual(['a.txt', 'b.txt', 'kept.txt', 'link', 'made-offline']);
      // The first upload to meet the stopped server tells the mount it is offline: that upload starts once the
      // mount has been quiet for the flush delay, and fails after the SDK's own retries.
      let status = '';
      for (const end = Date.now() + 15_000; Date.now() < end && !/OFFLINE/.test(status); await new Promise((r) => setTimeout(r, 250))) {
        status = shResult(`${process.execPath} ${BIN} status ${m.mountpoint}`).stdout;
      }
      expect(status).toMatch(/OFFLINE/);
      server = await startEmbeddedServer({ dataDir, port });
      // The probe finds the server again within its interval (at most 15 s), and the queue drains.
      const deadline = Date.now() + 40_000;
      let a = '';
      let b = '';
      let made = '';
      let old = 'old\n';
      let link = '';
      let kept = '';
      let keep = 'keep\n';
      let moved: string[] = [];
      while (Date.now() < deadline) {
        // A poll that fails (a kept-alive connection the server closed as it was reused, mid-body) is polled again.
        const get = (key: string) =>
          fetch(`${server.endpoint}/offline/${key}`)
            .then(async (r) => (r.ok ? r.text() : ''))
            .catch(() => '');
        const mode = (key: string) =>
          fetch(`${server.endpoint}/offline/${key}`, { method: 'HEAD' })
            .then((r) => (r.ok ? (r.headers.get('x-amz-meta-mode') ?? '') : ''))
            .catch(() => '');
        [a, b, made, old, link, kept, keep] = await Promise.all([get('docs/a.txt'), get('docs/b.txt'), mode('docs/made-offline/'), get('docs/old.txt'), mode('docs/link'), get('docs/kept.txt'), get('docs/keep.txt')]);
        moved = await Promise.all(['project/src/x.c', 'project/src/new.c', 'project/README', 'proj/src/x.c', 'proj/README'].map(get));
        if (a === 'first draft\noffline edit\n' && b === 'written offline\n' && made && !old && link && kept && !keep && moved.join('|') === 'int x;\n|int y;\n|readme\n||') break;
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(a).toBe('first draft\noffline edit\n');
      expect(b).toBe('written offline\n');
      expect(made).toBe(String(0o40700)); // the directory made offline, its marker uploaded once the server was back
      expect(old).toBe(''); // removed offline: its journaled delete went once the server was back
      expect(link).toBe(String(0o120777)); // the symlink made offline, uploaded as s3fs's symlink object
      expect([kept, keep]).toEqual(['keep\n', '']); // moved offline: uploaded under its new name, the old one deleted
      expect(moved).toEqual(['int x;\n', 'int y;\n', 'readme\n', '', '']); // the tree moved offline, under its new names only
    } finally {
      await m.stop();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
