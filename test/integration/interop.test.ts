/**
 * Interop with the tools people already use on their buckets, on one s3rver bucket side by side: the real s3fs
 * (FUSE) and rclone (both installed by scripts/install.sh --test), and the SDK writing their metadata
 * conventions. Each tool must show the other's files with the right mode, owner, time, link target and xattrs.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, forceUnmount, isMounted, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh } from '../helpers/sh.js';
import { scratchDir } from '../helpers/scratch.js';

const BUCKET = 'interop-test';
let s3: TestServer;
let m: TestMount;
let mp: string;
let s3fsMp: string;
let work: string;
let rcloneEnv: string;

const flush = () => sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 120);
const refresh = (p = mp) => sh(`${process.execPath} ${BIN} refresh ${p}`);

function need(tool: string): void {
  if (spawnSync('which', [tool]).status !== 0) throw new Error(`${tool} is not installed: scripts/install.sh --test installs it`);
}

beforeAll(async () => {
  need('s3fs');
  need('rclone');
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--flush-delay', '200'] });
  mp = m.mountpoint;
  work = scratchDir('interop');
  s3fsMp = path.join(work, 's3fs');
  mkdirSync(s3fsMp);
  writeFileSync(path.join(work, 'passwd'), 'S3RVER:S3RVER\n', { mode: 0o600 });
  // stat_cache_expire=1: s3fs otherwise trusts its own metadata cache for 15 minutes.
  sh(`s3fs ${BUCKET} ${s3fsMp} -o url=${s3.endpoint},use_path_request_style,use_xattr,passwd_file=${work}/passwd,stat_cache_expire=1,dbglevel=err`, 30);
  const deadline = Date.now() + 10_000;
  while (!isMounted(s3fsMp)) {
    if (Date.now() > deadline) throw new Error('s3fs did not mount');
    await new Promise((r) => setTimeout(r, 100));
  }
  rcloneEnv = [
    'RCLONE_CONFIG_SV_TYPE=s3',
    'RCLONE_CONFIG_SV_PROVIDER=Other',
    `RCLONE_CONFIG_SV_ENDPOINT=${s3.endpoint}`,
    'RCLONE_CONFIG_SV_ACCESS_KEY_ID=S3RVER',
    'RCLONE_CONFIG_SV_SECRET_ACCESS_KEY=S3RVER',
    'RCLONE_CONFIG_SV_REGION=us-east-1',
    'RCLONE_CONFIG_SV_FORCE_PATH_STYLE=true',
  ].join(' ');
});

afterAll(async () => {
  if (s3fsMp) forceUnmount(s3fsMp);
  await m?.stop();
  await s3?.stop();
});

describe('s3fs', () => {
  it('shows files written through s3vault with their mode, owner, mtime, link target and xattrs', () => {
    sh(`mkdir ${mp}/sv && echo 'from s3vault' > ${mp}/sv/f && chmod 640 ${mp}/sv/f && chown 1234:2345 ${mp}/sv/f && touch -m -d @1600000000 ${mp}/sv/f`);
    sh(`ln -s f ${mp}/sv/l && setfattr -n user.k -v value ${mp}/sv/f`);
    flush();
    expect(sh(`cat ${s3fsMp}/sv/f`)).toBe('from s3vault\n');
    expect(sh(`stat -c '%a %u %g %Y' ${s3fsMp}/sv/f`).trim()).toBe('640 1234 2345 1600000000');
    expect(sh(`readlink ${s3fsMp}/sv/l`).trim()).toBe('f');
    expect(sh(`getfattr --only-values -n user.k ${s3fsMp}/sv/f`)).toBe('value');
  });

  it('s3vault shows files written through s3fs the same way', () => {
    sh(`mkdir ${s3fsMp}/fs && echo 'from s3fs' > ${s3fsMp}/fs/g && chmod 600 ${s3fsMp}/fs/g && chown 42:43 ${s3fsMp}/fs/g && touch -m -d @1500000000 ${s3fsMp}/fs/g`);
    sh(`ln -s g ${s3fsMp}/fs/m && setfattr -n user.z -v zval ${s3fsMp}/fs/g`);
    refresh();
    expect(sh(`cat ${mp}/fs/g`)).toBe('from s3fs\n');
    // What s3fs itself reports (s3fs 1.90 on s3rver does not keep a utimens: the time it shows is its upload's).
    const s3fsView = sh(`stat -c '%a %u %g %Y' ${s3fsMp}/fs/g`).trim();
    expect(s3fsView).toMatch(/^600 42 43 \d+$/);
    expect(sh(`stat -c '%a %u %g %Y' ${mp}/fs/g`).trim()).toBe(s3fsView);
    expect(sh(`readlink ${mp}/fs/m`).trim()).toBe('g');
    expect(sh(`getfattr --only-values -n user.z ${mp}/fs/g`)).toBe('zval');
  });
});

describe('rclone', () => {
  it('s3vault shows the modification time rclone stores', () => {
    sh(`echo rc > ${work}/local.txt && touch -m -d @1400000000 ${work}/local.txt`);
    sh(`env -u AWS_CA_BUNDLE ${rcloneEnv} rclone copyto ${work}/local.txt sv:${BUCKET}/rc/file.txt`, 60);
    refresh();
    expect(sh(`stat -c '%s %Y' ${mp}/rc/file.txt`).trim()).toBe('3 1400000000');
  });

  it('rclone shows the modification time s3vault stores', () => {
    sh(`mkdir -p ${mp}/rc2 && echo sv > ${mp}/rc2/f.txt && touch -m -d @1300000000 ${mp}/rc2/f.txt`);
    flush();
    const listed = JSON.parse(sh(`env -u AWS_CA_BUNDLE ${rcloneEnv} rclone lsjson sv:${BUCKET}/rc2/`, 60)) as { Name: string; ModTime: string }[];
    expect(new Date(listed.find((e) => e.Name === 'f.txt')!.ModTime).getTime()).toBe(1300000000 * 1000);
  });
});
