/**
 * Backup browsing on a real S3 with versioning: a single-node Ceph RADOS Gateway started by the test
 * (src/storage/rgw-server.ts; installed by scripts/install.sh --test). Objects are created, overwritten and
 * deleted between known instants; then: --as-of views at three instants, the .s3vault-versions view, the
 * versions and restore commands, --read-only (checked against a log of every request the server got), a bucket
 * without versioning, and wrong credentials (RGW checks signatures; s3rver does not).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, PutBucketVersioningCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRgwServer, type RgwServer } from '../../src/storage/rgw-server.js';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { sh, shResult } from '../helpers/sh.js';
import { scratchDir } from '../helpers/scratch.js';

const BUCKET = 'backups';
const PLAIN = 'plain-bucket';
let rgw: RgwServer;
let client: S3Client;
let env: NodeJS.ProcessEnv;
const t: Date[] = [];
const mounts: TestMount[] = [];
let proxy: ChildProcess | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const put = (key: string, body: string, bucket = BUCKET) => client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
const cli = (args: string) => shResult(`${process.execPath} ${BIN} ${args}`, 60);

async function mountRgw(extra: string[], endpoint = rgw.endpoint, bucket = BUCKET): Promise<TestMount> {
  const m = await mount({ endpoint, bucket, extraArgs: extra, env });
  mounts.push(m);
  return m;
}

/** An instant strictly between two phases of changes (RGW may keep whole seconds). */
async function instant(): Promise<void> {
  await sleep(1200);
  t.push(new Date());
  await sleep(1200);
}

beforeAll(async () => {
  rgw = await startRgwServer();
  env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
  client = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' });
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
  await client.send(new PutBucketVersioningCommand({ Bucket: BUCKET, VersioningConfiguration: { Status: 'Enabled' } }));
  await client.send(new CreateBucketCommand({ Bucket: PLAIN }));
  await put('hello.txt', 'not versioned\n', PLAIN);
  // Phase 1 → t[0] → phase 2 → t[1] → phase 3 → t[2].
  await put('report.txt', 'report v1\n');
  await put('docs/notes.txt', 'notes v1\n');
  await instant();
  await put('report.txt', 'report v2, longer\n');
  await put('new.txt', 'added in phase 2\n');
  await instant();
  await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'report.txt' }));
  await put('docs/notes.txt', 'notes v2\n');
  await put('later/deep.txt', 'phase 3\n');
  await instant();
}, 180_000);

afterAll(async () => {
  for (const m of mounts) await m.stop().catch(() => undefined);
  proxy?.kill();
  client?.destroy();
  await rgw?.stop();
});

describe('point-in-time views (--as-of)', () => {
  it('shows the bucket exactly as it was at three instants; delete markers hide files', async () => {
    const views = [];
    for (const at of t) views.push(await mountRgw(['--as-of', at.toISOString()]));
    const [v1, v2, v3] = views.map((m) => m.mountpoint) as [string, string, string];
    expect(sh(`cd ${v1} && find . -type f | sort`)).toBe('./docs/notes.txt\n./report.txt\n');
    expect(sh(`cat ${v1}/report.txt ${v1}/docs/notes.txt`)).toBe('report v1\nnotes v1\n');
    expect(sh(`cd ${v2} && find . -type f | sort`)).toBe('./docs/notes.txt\n./new.txt\n./report.txt\n');
    expect(sh(`cat ${v2}/report.txt ${v2}/new.txt`)).toBe('report v2, longer\nadded in phase 2\n');
    expect(sh(`stat -c %s ${v2}/report.txt`).trim()).toBe('18');
    expect(sh(`cd ${v3} && find . -type f | sort`)).toBe('./docs/notes.txt\n./later/deep.txt\n./new.txt\n');
    expect(sh(`cat ${v3}/docs/notes.txt`)).toBe('notes v2\n');
    expect(shResult(`cat ${v3}/report.txt`).code).not.toBe(0);
    // Read-only: every change is EROFS.
    for (const cmd of [`touch ${v1}/x`, `rm ${v1}/report.txt`, `mv ${v1}/report.txt ${v1}/r`, `mkdir ${v1}/d`, `echo x >> ${v1}/report.txt`]) {
      expect(shResult(cmd).stderr).toMatch(/Read-only file system/);
    }
    for (const m of views) await m.stop();
  });

  it('refuses --as-of on a bucket without versioning, with one clear message', () => {
    const dir = scratchDir('asof');
    const r = spawnResult(`${process.execPath} ${BIN} mount ${PLAIN} ${dir} --endpoint ${rgw.endpoint} --as-of ${t[0]!.toISOString()} --vault ${dir}-vault --foreground`, env);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/versioning is not enabled/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  }, 60_000);
});

describe('versions of one file in a normal mount', () => {
  let mp: string;
  beforeAll(async () => {
    mp = (await mountRgw(['--flush-delay', '200'])).mountpoint;
  });

  it('.s3vault-versions lists each stored version with its time and size, and reads its content', () => {
    expect(sh(`ls -a ${mp}`)).not.toContain('.s3vault-versions'); // hidden
    expect(sh(`ls ${mp}/.s3vault-versions`).split('\n').filter(Boolean).sort()).toEqual(['new.txt', 'report.txt']);
    const versions = sh(`ls ${mp}/.s3vault-versions/report.txt`).split('\n').filter(Boolean);
    expect(versions).toHaveLength(2);
    expect(new Date(versions[0]!).getTime()).toBeLessThan(t[0]!.getTime());
    expect(sh(`cat ${mp}/.s3vault-versions/report.txt/${versions[0]}`)).toBe('report v1\n');
    expect(sh(`stat -c %s ${mp}/.s3vault-versions/report.txt/${versions[1]}`).trim()).toBe('18');
    expect(sh(`ls ${mp}/docs/.s3vault-versions/notes.txt | wc -l`).trim()).toBe('2');
    expect(shResult(`touch ${mp}/.s3vault-versions/report.txt/x`).stderr).toMatch(/Read-only file system/);
  });

  it('s3vault versions prints the same as a table, delete markers included', () => {
    const out = sh(`${process.execPath} ${BIN} versions ${mp}/report.txt`);
    const lines = out.trim().split('\n');
    expect(lines[0]).toMatch(/^TIME\s+SIZE\s+VERSION ID/);
    expect(lines).toHaveLength(4); // header, delete marker, v2, v1
    expect(lines[1]).toMatch(/current, deleted/);
    expect(lines[2]).toMatch(/\s18\s/);
  });

  it('s3vault restore --as-of copies an old version back as the current one', async () => {
    expect(shResult(`cat ${mp}/report.txt`).code).not.toBe(0); // deleted now
    sh(`${process.execPath} ${BIN} restore ${mp}/report.txt --as-of ${t[0]!.toISOString()}`);
    expect(sh(`cat ${mp}/report.txt`)).toBe('report v1\n');
    const r = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'report.txt' }));
    expect(await r.Body!.transformToString()).toBe('report v1\n');
    expect(sh(`${process.execPath} ${BIN} versions ${mp}/report.txt`).trim().split('\n')).toHaveLength(5);
  });
});

describe('read-only mounts and buckets without versioning', () => {
  it('--read-only sends no request that changes the bucket, and the vault still caches', async () => {
    const log = path.join(scratchDir('reqlog'), 'requests.log');
    writeFileSync(log, '');
    const script = fileURLToPath(new URL('../helpers/request-log-proxy.mjs', import.meta.url));
    proxy = spawn(process.execPath, [script, String(new URL(rgw.endpoint).port), log], { stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise<number>((resolve) => proxy!.stdout!.once('data', (c: Buffer) => resolve(Number(/listening (\d+)/.exec(c.toString())![1]))));
    const m = await mountRgw(['--read-only'], `http://127.0.0.1:${port}`);
    const mp = m.mountpoint;
    expect(sh(`cat ${mp}/docs/notes.txt`)).toBe('notes v2\n');
    for (const cmd of [`touch ${mp}/x`, `rm ${mp}/new.txt`, `mv ${mp}/new.txt ${mp}/n`, `mkdir ${mp}/d`, `echo x >> ${mp}/new.txt`, `chmod 600 ${mp}/new.txt`, `ln -s a ${mp}/l`, `setfattr -n user.a -v b ${mp}/new.txt`]) {
      expect(shResult(cmd).stderr).toMatch(/Read-only file system/);
    }
    const gets = () => readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('GET /backups/docs/notes.txt')).length;
    const before = gets();
    sh(`echo 3 > /proc/sys/vm/drop_caches; cat ${mp}/docs/notes.txt > /dev/null`);
    expect(gets()).toBe(before); // served from the vault
    await m.stop();
    const methods = new Set(readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ')[0]));
    expect([...methods].sort()).toEqual(expect.arrayContaining(['GET']));
    for (const changing of ['PUT', 'POST', 'DELETE']) expect(methods.has(changing)).toBe(false);
  });

  it('on a bucket without versioning the view and the commands say so', async () => {
    const mp = (await mountRgw([], rgw.endpoint, PLAIN)).mountpoint;
    expect(sh(`ls ${mp}/.s3vault-versions`).trim()).toBe('VERSIONING-IS-OFF.txt');
    expect(sh(`cat ${mp}/.s3vault-versions/VERSIONING-IS-OFF.txt`)).toMatch(/Versioning is not enabled/);
    const r = cli(`versions ${mp}/hello.txt`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/versioning is not enabled/);
  });

  it('wrong credentials: one clear message, exit 3, no stack trace, no mount', () => {
    const dir = scratchDir('badcred');
    const r = spawnResult(`${process.execPath} ${BIN} mount ${BUCKET} ${dir} --endpoint ${rgw.endpoint} --vault ${dir}-vault --foreground`, { ...env, AWS_SECRET_ACCESS_KEY: 'wrong-secret' });
    expect(r.code).toBe(3);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/secret key is wrong|signature/i);
    const unknown = spawnResult(`${process.execPath} ${BIN} mount ${BUCKET} ${dir} --endpoint ${rgw.endpoint} --vault ${dir}-vault2 --foreground`, { AWS_ACCESS_KEY_ID: 'NOSUCHKEY', AWS_SECRET_ACCESS_KEY: 'x' });
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/access key is not known/);
  });
});

/** A CLI command with these credentials in its environment. */
function spawnResult(cmd: string, creds: NodeJS.ProcessEnv): { code: number; stderr: string } {
  const r = shResult(`env ${Object.entries(creds).map(([k, v]) => `${k}=${v}`).join(' ')} ${cmd}`, 60);
  return { code: r.code, stderr: r.stderr };
}
