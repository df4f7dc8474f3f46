#!/usr/bin/env node
/**
 * A transcript of backup browsing on a versioned bucket (a single-node Ceph RADOS Gateway started here, as the
 * tests do; scripts/install.sh --test installs it): objects are written, overwritten and deleted between three
 * instants, then the bucket is mounted --as-of each instant and browsed with ls/cat, the versions view and
 * command are shown, and restore brings an old version back. Run: npm run build && node scripts/demo-versions.mjs
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, DeleteObjectCommand, PutBucketVersioningCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startRgwServer } from '../dist/storage/rgw-server.js';

const BIN = fileURLToPath(new URL('../bin/s3vault.js', import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const work = mkdtempSync(path.join(os.tmpdir(), 's3vault-demo-'));

const rgw = await startRgwServer();
const env = { ...process.env, AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey, AWS_REGION: 'us-east-1' };
const client = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' });
const put = (key, body) => client.send(new PutObjectCommand({ Bucket: 'backups', Key: key, Body: body }));
const say = (line) => process.stdout.write(`${line}\n`);
const shell = (cmd) => {
  say(`$ ${cmd}`);
  try {
    process.stdout.write(execFileSync('bash', ['-c', cmd], { env, encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] }));
  } catch (err) {
    process.stdout.write(`${err.stdout ?? ''}${err.stderr ?? ''}(exit ${err.status})\n`);
  }
};
const instants = [];
const instant = async () => {
  await sleep(1200);
  instants.push(new Date());
  say(`# --- instant t${instants.length} = ${instants.at(-1).toISOString()}`);
  await sleep(1200);
};

async function mounted(mp, args) {
  const child = spawn(process.execPath, [BIN, 'mount', 'backups', mp, '--endpoint', rgw.endpoint, '--vault', `${mp}.vault`, '--foreground', ...args], { env, stdio: 'ignore' });
  for (let i = 0; i < 200 && !readFileSync('/proc/self/mounts', 'utf8').includes(` ${mp} `); i++) await sleep(50);
  return child;
}

const children = [];
try {
  await client.send(new CreateBucketCommand({ Bucket: 'backups' }));
  await client.send(new PutBucketVersioningCommand({ Bucket: 'backups', VersioningConfiguration: { Status: 'Enabled' } }));
  say('# phase 1: report.txt v1, docs/notes.txt v1');
  await put('report.txt', 'report v1\n');
  await put('docs/notes.txt', 'notes v1\n');
  await instant();
  say('# phase 2: report.txt v2, new.txt');
  await put('report.txt', 'report v2, longer\n');
  await put('new.txt', 'added in phase 2\n');
  await instant();
  say('# phase 3: report.txt deleted, docs/notes.txt v2, later/deep.txt');
  await client.send(new DeleteObjectCommand({ Bucket: 'backups', Key: 'report.txt' }));
  await put('docs/notes.txt', 'notes v2\n');
  await put('later/deep.txt', 'phase 3\n');
  await instant();

  for (const [i, at] of instants.entries()) {
    const mp = path.join(work, `t${i + 1}`);
    execFileSync('mkdir', ['-p', mp]);
    say(`$ s3vault mount backups ${mp} --as-of ${at.toISOString()} &`);
    children.push(await mounted(mp, ['--as-of', at.toISOString()]));
    shell(`cd ${mp} && find . -type f | sort && cat $(find . -type f | sort)`);
    shell(`echo change > ${mp}/report.txt`);
  }
  const live = path.join(work, 'live');
  execFileSync('mkdir', ['-p', live]);
  say(`$ s3vault mount backups ${live} &`);
  children.push(await mounted(live, []));
  shell(`ls -l ${live}/docs/.s3vault-versions/notes.txt/`);
  shell(`cat ${live}/docs/.s3vault-versions/notes.txt/*`);
  shell(`s3vault() { ${process.execPath} ${BIN} "$@"; }; s3vault versions ${live}/docs/notes.txt`);
  shell(`s3vault() { ${process.execPath} ${BIN} "$@"; }; s3vault restore ${live}/docs/notes.txt --as-of ${instants[0].toISOString()} && sleep 1.5 && cat ${live}/docs/notes.txt`);
} finally {
  for (const c of children) c.kill('SIGTERM');
  await sleep(3000);
  for (const l of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const mp = l.split(' ')[1];
    if (mp?.startsWith(work)) execFileSync('fusermount3', ['-uz', mp]);
  }
  client.destroy();
  await rgw.stop();
  rmSync(work, { recursive: true, force: true });
}
