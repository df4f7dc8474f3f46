/**
 * The foundation end to end: a real s3rver on loopback, a real vault, a real FUSE mount driven with
 * ordinary shell tools from child processes.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, forceUnmount, isMounted, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh, shResult } from '../helpers/sh.js';
import { startEmbeddedServer } from '../../src/storage/embedded-server.js';

const BUCKET = 'mount-test';
let s3: TestServer;
let m: TestMount;

/** A process's arguments; none if it is gone meanwhile. */
const procArgs = (pid: string): string[] => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
};
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
/** Upload pending changes now (the write-back queue would after its delay) and wait. */
const flush = () => sh(`${process.execPath} ${BIN} flush --wait ${m.mountpoint}`, 120);

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  await s3.put(BUCKET, 'from-sdk/hello.txt', 'written by the SDK\n');
  await s3.put(BUCKET, 'from-s3fs/tool.sh', '#!/bin/sh\n', { mode: String(0o100755), uid: '1234', gid: '2345', mtime: '1600000000' });
  m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
});

afterAll(async () => {
  await m?.stop();
  await s3?.stop();
});

describe('mount: ordinary tools on a mounted bucket', () => {
  it('shows objects written by another tool, with their sizes and content', () => {
    expect(sh(`ls ${m.mountpoint}`).split('\n')).toEqual(expect.arrayContaining(['from-sdk', 'from-s3fs']));
    expect(sh(`cat ${m.mountpoint}/from-sdk/hello.txt`)).toBe('written by the SDK\n');
    expect(sh(`stat -c %s ${m.mountpoint}/from-sdk/hello.txt`).trim()).toBe('19');
  });

  it('reads s3fs-style POSIX metadata (mode, uid, gid, mtime)', () => {
    expect(sh(`stat -c '%a %u %g %Y' ${m.mountpoint}/from-s3fs/tool.sh`).trim()).toBe('755 1234 2345 1600000000');
  });

  it('copies a 50 MB file in and out with equal checksums, and the object in S3 is byte-identical', async () => {
    const src = path.join(os.tmpdir(), `s3vault-50m-${process.pid}`);
    const data = randomBytes(50 * 1024 * 1024);
    writeFileSync(src, data);
    sh(`cp ${src} ${m.mountpoint}/big.bin`, 120);
    expect(sh(`md5sum < ${m.mountpoint}/big.bin`, 120).split(' ')[0]).toBe(md5(data));
    sh(`cp ${m.mountpoint}/big.bin ${src}.out`, 120);
    expect(sh(`md5sum < ${src}.out`).split(' ')[0]).toBe(md5(data));
    flush();
    expect(md5(await s3.get(BUCKET, 'big.bin'))).toBe(md5(data));
    sh(`rm -f ${src} ${src}.out`);
  });

  it('ls -l lists sizes and types', () => {
    sh(`printf 12345 > ${m.mountpoint}/five.txt`);
    const out = sh(`ls -l ${m.mountpoint}`);
    expect(out).toMatch(/^-rw-r--r-- .* 5 .* five\.txt$/m);
    expect(out).toMatch(/^d.* from-sdk$/m);
  });

  it('mkdir -p creates directory markers (uploaded by the write-back, with their mode); rmdir of a non-empty directory fails with ENOTEMPTY', async () => {
    sh(`mkdir -p ${m.mountpoint}/a/b/c && chmod 700 ${m.mountpoint}/a/b`);
    expect(sh(`stat -c %A ${m.mountpoint}/a/b ${m.mountpoint}/a/b/c`).split('\n')).toEqual(['drwx------', 'drwxr-xr-x', '']);
    flush();
    expect((await s3.head(BUCKET, 'a/b/c/'))?.meta.mode).toBe(String(0o40755));
    expect((await s3.head(BUCKET, 'a/b/'))?.meta.mode).toBe(String(0o40700));
    sh(`echo x > ${m.mountpoint}/a/b/c/f`);
    const r = shResult(`rmdir ${m.mountpoint}/a/b/c`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not empty/i);
  });

  it('mv renames a file server-side and mv of a directory moves every key under it', async () => {
    sh(`echo moved > ${m.mountpoint}/a/src.txt`);
    flush();
    sh(`mv ${m.mountpoint}/a/src.txt ${m.mountpoint}/a/dst.txt`);
    expect(shResult(`ls ${m.mountpoint}/a/src.txt`).code).not.toBe(0);
    flush(); // the old name's delete is journaled, and sent batched
    expect(await s3.head(BUCKET, 'a/src.txt')).toBeNull();
    expect((await s3.get(BUCKET, 'a/dst.txt')).toString()).toBe('moved\n');
    sh(`mv ${m.mountpoint}/a ${m.mountpoint}/z`);
    expect(sh(`cat ${m.mountpoint}/z/b/c/f`)).toBe('x\n');
    flush();
    expect((await s3.get(BUCKET, 'z/b/c/f')).toString()).toBe('x\n');
    expect(await s3.head(BUCKET, 'a/b/c/f')).toBeNull();
    expect(shResult(`ls ${m.mountpoint}/a`).code).not.toBe(0);
  });

  it('rm -r removes a tree and its objects', async () => {
    sh(`rm -r ${m.mountpoint}/z`);
    expect(shResult(`ls ${m.mountpoint}/z`).code).not.toBe(0);
    flush(); // the deletes (files' and markers') are journaled and batched: flush sends them now
    expect(await s3.head(BUCKET, 'z/b/c/f')).toBeNull();
    expect(await s3.head(BUCKET, 'z/')).toBeNull();
  });

  it('appends with >> to an object uploaded elsewhere, and truncates', async () => {
    sh(`echo more >> ${m.mountpoint}/from-sdk/hello.txt`);
    expect(sh(`cat ${m.mountpoint}/from-sdk/hello.txt`)).toBe('written by the SDK\nmore\n');
    flush();
    expect((await s3.get(BUCKET, 'from-sdk/hello.txt')).toString()).toBe('written by the SDK\nmore\n');
    sh(`truncate -s 7 ${m.mountpoint}/from-sdk/hello.txt`);
    flush();
    expect((await s3.get(BUCKET, 'from-sdk/hello.txt')).toString()).toBe('written');
    sh(`truncate -s 10 ${m.mountpoint}/from-sdk/hello.txt`);
    flush();
    expect(await s3.get(BUCKET, 'from-sdk/hello.txt')).toEqual(Buffer.from('written\0\0\0'));
  });

  it('chmod and touch persist as s3fs/rclone-compatible metadata', async () => {
    flush();
    sh(`chmod 640 ${m.mountpoint}/five.txt && touch -d @1700000000 ${m.mountpoint}/five.txt`);
    flush();
    const head = await s3.head(BUCKET, 'five.txt');
    expect(Number(head!.meta.mode) & 0o7777).toBe(0o640);
    expect(Number(head!.meta.mtime)).toBe(1700000000);
    expect((await s3.get(BUCKET, 'five.txt')).toString()).toBe('12345');
  });

  it('refuses hard links with EPERM and overlong names with ENAMETOOLONG', () => {
    expect(shResult(`ln ${m.mountpoint}/five.txt ${m.mountpoint}/hard`).stderr).toMatch(/not permitted/i);
    expect(shResult(`touch ${m.mountpoint}/${'n'.repeat(256)}`).stderr).toMatch(/too long/i);
  });

  it('a remount, with the same vault and with a fresh one, shows the same tree', async () => {
    const before = sh(`cd ${m.mountpoint} && find . | sort && md5sum big.bin five.txt`);
    const vault = m.vault;
    expect(await m.stop()).toBe(0);
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault });
    expect(sh(`cd ${m.mountpoint} && find . | sort && md5sum big.bin five.txt`, 120)).toBe(before);
    await m.stop();
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    expect(sh(`cd ${m.mountpoint} && find . | sort && md5sum big.bin five.txt`, 120)).toBe(before);
  });

  it('a vault mounted on another bucket forgets the listings it kept (they hold across remounts of one bucket)', async () => {
    await s3.createBucket('mount-test-other');
    await s3.put('mount-test-other', 'from-sdk/other.txt', 'another bucket\n');
    const vault = m.vault;
    expect(sh(`ls ${m.mountpoint}/from-sdk`)).toBe('hello.txt\n');
    await m.stop();
    m = await mount({ endpoint: s3.endpoint, bucket: 'mount-test-other', vault });
    expect(sh(`ls ${m.mountpoint}/from-sdk`)).toBe('other.txt\n');
    await m.stop();
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault });
    expect(sh(`ls ${m.mountpoint}/from-sdk`)).toBe('hello.txt\n');
  });
});

describe('the quick start (embedded server)', () => {
  it('a mount killed with kill -9 takes its embedded server with it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-up-'));
    const state = path.join(dir, 'state');
    const mp = path.join(dir, 'mnt');
    /** Processes whose arguments include every one of `args`. */
    const processes = (...args: string[]): number[] =>
      readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .filter((d) => {
          try {
            const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
            return args.every((a) => argv.includes(a));
          } catch {
            return false; // gone meanwhile
          }
        })
        .map(Number);
    try {
      sh(`cd ${dir} && ${process.execPath} ${BIN} up --dir ${state} --mountpoint ${mp}`, 120);
      const [daemon] = processes(BIN, 'up', state, '--foreground');
      const [server] = processes('-d', path.join(state, 's3'));
      expect(daemon).toBeGreaterThan(0);
      expect(server).toBeGreaterThan(0);
      process.kill(daemon!, 'SIGKILL');
      // Gone, or a zombie waiting for init to reap it (its parent is dead).
      const exited = (pid: number) => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
      const gone = async (pid: number) => {
        for (let i = 0; i < 50; i++, await new Promise((r) => setTimeout(r, 100))) if (exited(pid)) return true;
        return false;
      };
      expect(await gone(server!)).toBe(true);
    } finally {
      forceUnmount(mp);
      for (const pid of processes('-d', path.join(state, 's3'))) process.kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses names its server cannot store, and starts the server again when it dies', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-up-'));
    const state = path.join(dir, 'state');
    const mp = path.join(dir, 'mnt');
    try {
      const out = sh(`cd ${dir} && ${process.execPath} ${BIN} up --dir ${state} --mountpoint ${mp}`, 120);
      const endpoint = /http:\/\/127\.0\.0\.1:\d+/.exec(out)![0];
      const get = async (key: string) => {
        const r = await fetch(`${endpoint}/s3vault/${key}`); // s3rver takes unsigned requests
        return r.ok ? await r.text() : `HTTP ${r.status}`;
      };
      const servers = () => readdirSync('/proc').filter((d) => /^\d+$/.test(d) && procArgs(d).includes(path.join(state, 's3'))).map(Number);
      // s3rver keeps a name as `<name>._S3rver_metadata.json`: 234 bytes and more cannot be stored (before, the
      // server crashed on the upload and the mount stayed offline for good).
      expect(sh(`stat -f -c %l ${mp}`)).toBe('233\n');
      const long = 'y'.repeat(234);
      const fits = 'z'.repeat(233);
      const refused = shResult(`echo x > ${mp}/${long}`);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain('File name too long');
      expect(shResult(`mkdir ${mp}/${long}`).stderr).toContain('File name too long');
      sh(`echo fits > ${mp}/${fits} && ${process.execPath} ${BIN} flush --wait ${mp}`, 120);
      expect(await get(fits)).toBe('fits\n');
      // The server killed: the mount starts it again on its port, and what is written meanwhile gets there.
      const [first] = servers();
      expect(first).toBeGreaterThan(0);
      process.kill(first!, 'SIGKILL');
      sh(`echo after > ${mp}/after.txt && ${process.execPath} ${BIN} flush --wait ${mp}`, 60);
      expect(await get('after.txt')).toBe('after\n');
      const now = servers();
      expect(now).toHaveLength(1);
      expect(now[0]).not.toBe(first);
      expect(readFileSync(path.join(state, 's3vault.log'), 'utf8')).toContain('embedded S3 server exited unexpectedly: started again on its port');
    } finally {
      if (isMounted(mp)) shResult(`${process.execPath} ${BIN} unmount ${mp}`, 60);
      forceUnmount(mp);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('Ctrl-C in the terminal of a foreground mount uploads what is pending before the server stops', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-up-'));
    const state = path.join(dir, 'state');
    const mp = path.join(dir, 'mnt');
    // A terminal's Ctrl-C signals its whole foreground process group: the mount leads one here, as a shell's job.
    const child = spawn(process.execPath, [BIN, 'up', '--foreground', '--dir', state, '--mountpoint', mp, '--flush-delay', '60000'], { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    try {
      for (let i = 0; i < 200 && !isMounted(mp); i++) await new Promise((r) => setTimeout(r, 100));
      expect(isMounted(mp)).toBe(true);
      sh(`echo pending > ${mp}/at-ctrl-c.txt`);
      process.kill(-child.pid!, 'SIGINT');
      const code = await new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', r)));
      expect(code).toBe(0);
      expect(out).toContain('uploading pending changes before unmounting');
      expect(out).not.toContain('changes left in the vault');
      const server = await startEmbeddedServer({ dataDir: path.join(state, 's3') });
      try {
        const r = await fetch(`${server.endpoint}/s3vault/at-ctrl-c.txt`);
        expect(await r.text()).toBe('pending\n');
      } finally {
        await server.stop();
      }
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone already
      }
      forceUnmount(mp);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps its stored listings across a restart, though the server comes back on another port', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-up-'));
    const state = path.join(dir, 'state');
    const mp = path.join(dir, 'mnt');
    const up = () => sh(`cd ${dir} && ${process.execPath} ${BIN} up --dir ${state} --mountpoint ${mp}`, 120);
    const down = () => sh(`${process.execPath} ${BIN} unmount ${mp}`, 120);
    const stored = () => {
      const db = new Database(path.join(state, 'vault', 'vault.db'), { readonly: true, fileMustExist: true });
      try {
        return (db.prepare('SELECT count(*) AS n FROM listings').get() as { n: number }).n;
      } finally {
        db.close();
      }
    };
    try {
      const first = up();
      sh(`mkdir ${mp}/d && for i in 1 2 3; do echo $i > ${mp}/d/f$i; done && ${process.execPath} ${BIN} flush --wait ${mp}`, 120);
      expect(sh(`ls ${mp}/d`)).toBe('f1\nf2\nf3\n');
      down();
      expect(isMounted(mp)).toBe(false);
      const kept = stored();
      expect(kept).toBeGreaterThan(0);
      const second = up();
      const port = (out: string) => /127\.0\.0\.1:(\d+)/.exec(out)?.[1];
      expect(port(second)).toBeDefined();
      expect(port(second)).not.toBe(port(first));
      expect(stored()).toBe(kept); // not cleared as if the vault now served other storage
      expect(sh(`cat ${mp}/d/f2`)).toBe('2\n');
    } finally {
      if (isMounted(mp)) shResult(`${process.execPath} ${BIN} unmount ${mp}`, 60);
      forceUnmount(mp);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
