/**
 * Set-user-ID and set-group-ID bits are cleared as a local disk clears them: by a write or truncate from a user
 * without CAP_FSETID, and by chown. s3vault takes that over from the kernel (FUSE_HANDLE_KILLPRIV_V2, asked for in
 * its INIT reply: src/fs/fuse/init.ts), so each case is run on a local directory and on the mount side by side and
 * the modes must agree — after the write, and in the object's metadata once uploaded.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { scratchDir } from '../helpers/scratch.js';
import { sh } from '../helpers/sh.js';

const BUCKET = 'suid-test';
let s3: TestServer;
let m: TestMount;
let mp: string;
let local: string;

/** Run a command as nobody (no capabilities, no groups). */
const asNobody = (cmd: string) => sh(`setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all bash -c '${cmd}'`);
const modeOf = (file: string) => sh(`stat -c %a ${file}`).trim();

/** The same steps in the local directory and on the mount; returns [local mode, mount mode] of the file. */
function both(name: string, steps: (dir: string) => void): [string, string] {
  const out: string[] = [];
  for (const dir of [local, mp]) {
    steps(dir);
    out.push(modeOf(`${dir}/${name}`));
  }
  return [out[0]!, out[1]!];
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  // Both places reachable by nobody: mkdtemp makes 0700 directories.
  const base = scratchDir('suid');
  chmodSync(base, 0o755);
  local = path.join(base, 'local');
  mkdirSync(local, { mode: 0o777 });
  chmodSync(local, 0o777);
  m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, mountpoint: path.join(base, 'mnt'), extraArgs: ['--allow-other', '--flush-delay', '200'] });
  mp = m.mountpoint;
  chmodSync(mp, 0o777);
});

afterAll(async () => {
  await m?.stop();
  await s3?.stop();
});

describe('set-user-ID and set-group-ID bits are cleared as on a local disk', () => {
  it('a write by a user without CAP_FSETID clears both (group execute set); a write by root keeps them', () => {
    expect(both('w', (d) => sh(`echo a > ${d}/w && chmod 6777 ${d}/w && echo root >> ${d}/w`))).toEqual(['6777', '6777']);
    expect(both('w', (d) => asNobody(`echo nobody >> ${d}/w`))).toEqual(['777', '777']);
    expect(sh(`cat ${mp}/w`)).toBe('a\nroot\nnobody\n');
  });

  it('set-group-ID without group execute goes only when the writer is not in the file\'s group', () => {
    expect(
      both('g', (d) => {
        sh(`echo a > ${d}/g && chmod 6766 ${d}/g`);
        asNobody(`echo b >> ${d}/g`);
      }),
    ).toEqual(['766', '766']);
    // The same write by a member of the file's group (root's, here): set-group-ID stays.
    expect(
      both('h', (d) => {
        sh(`echo a > ${d}/h && chmod 6766 ${d}/h`);
        sh(`setpriv --reuid=65534 --regid=0 --clear-groups --inh-caps=-all bash -c 'echo b >> ${d}/h'`);
      }),
    ).toEqual(['2766', '2766']);
  });

  it('a truncate or an O_TRUNC open by such a user clears them', () => {
    expect(both('t', (d) => {
      sh(`echo abc > ${d}/t && chmod 4777 ${d}/t`);
      asNobody(`truncate -s 1 ${d}/t`);
    })).toEqual(['777', '777']);
    expect(sh(`cat ${mp}/t`)).toBe('a');
    // An open with O_TRUNC (the shell's `>`): the kernel flags the OPEN.
    expect(both('o', (d) => {
      sh(`echo abc > ${d}/o && chmod 4777 ${d}/o`);
      asNobody(`: > ${d}/o`);
    })).toEqual(['777', '777']);
  });

  it('chown clears them, even by root; the new owner is kept', () => {
    expect(both('c', (d) => sh(`echo a > ${d}/c && chmod 6755 ${d}/c && chown 1234:2345 ${d}/c`))).toEqual(['755', '755']);
    expect(sh(`stat -c '%u %g' ${mp}/c`).trim()).toBe('1234 2345');
    // A directory keeps set-group-ID through chown (new entries inherit its group).
    const dirs = both('d', (d) => sh(`mkdir ${d}/d && chmod 2775 ${d}/d && chown 1234 ${d}/d`));
    expect(dirs).toEqual(['2775', '2775']);
  });

  it('a write through s3vault (the file not yet in the vault: no passthrough) clears them too, and S3 keeps the result', async () => {
    await s3.put(BUCKET, 'remote', 'remote\n', { mode: String(0o106777), mtime: '1600000000' });
    sh(`${process.execPath} ${BIN} refresh ${mp}`);
    expect(modeOf(`${mp}/remote`)).toBe('6777');
    asNobody(`echo more >> ${mp}/remote`);
    expect(modeOf(`${mp}/remote`)).toBe('777');
    expect(sh(`cat ${mp}/remote`)).toBe('remote\nmore\n');
    sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 120);
    for (const key of ['remote', 'w', 't', 'c']) expect(Number((await s3.head(BUCKET, key))?.meta.mode) & 0o7777, key).toBe(key === 'c' ? 0o755 : 0o777);
  });
});
