#!/usr/bin/env node
// Backup-sized trees: a directory of N entries (flat/) and N objects spread over N/100 directories (tree/), on a
// local S3 server started here. Times the raw paginated listing (the SDK), then through an s3vault mount: a cold
// and a warm `ls -f` of the flat directory and `find` over the tree, with the number of requests the server got
// during each (a request-logging proxy sits between the mount and the server). The mount is a read-only backup
// browse with listings kept for an hour (--listing-ttl 3600): within that, walks need no request.
//   node bench/big-tree.mjs [--server rgw|s3rver] [--objects 100000]      (npm run build first)
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { startBenchServer } from './server.mjs';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
};
const serverKind = arg('--server', 'rgw');
const N = Number(arg('--objects', '100000'));
const BUCKET = 'bigtree';
const work = mkdtempSync(path.join(os.tmpdir(), 's3vault-bigtree-'));
const log = (...a) => console.log(...a);

const { server, creds } = await startBenchServer(serverKind, path.join(work, 's3'));
const client = new S3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: creds, requestChecksumCalculation: 'WHEN_REQUIRED' });
const mp = path.join(work, 'mnt');
let proxy;
const results = { server: serverKind, objects: N, date: new Date().toISOString(), cores: os.cpus().length, rows: [] };
const row = (what, seconds, requests, note = '') => {
  results.rows.push({ what, seconds: Number(seconds.toFixed(3)), requests, note });
  log(`${what.padEnd(44)} ${seconds.toFixed(2).padStart(8)} s  ${String(requests ?? '').padStart(7)} requests  ${note}`);
};
try {
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
  const q = new PQueue({ concurrency: 64 });
  let t = Date.now();
  const dirs = Math.max(1, Math.floor(N / 100));
  for (let i = 0; i < N; i++) q.add(() => client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `flat/f${String(i).padStart(7, '0')}`, Body: 'x' })));
  for (let i = 0; i < N; i++) q.add(() => client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `tree/d${String(i % dirs).padStart(5, '0')}/f${String(i).padStart(7, '0')}`, Body: 'y' })));
  await q.onIdle();
  log(`filled ${2 * N} objects in ${((Date.now() - t) / 1000).toFixed(0)} s (${serverKind})`);

  const list = async (prefix, delimiter) => {
    let token;
    let n = 0;
    do {
      const r = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token }));
      n += (r.Contents?.length ?? 0) + (r.CommonPrefixes?.length ?? 0);
      token = r.NextContinuationToken;
    } while (token);
    return n;
  };
  t = performance.now();
  const flatCount = await list('flat/', '/');
  row(`raw SDK: paginated listing of flat/ (${flatCount})`, (performance.now() - t) / 1000, Math.ceil(flatCount / 1000));
  t = performance.now();
  const treeCount = await list('tree/');
  row(`raw SDK: paginated listing of tree/ (${treeCount})`, (performance.now() - t) / 1000, Math.ceil(treeCount / 1000));

  const reqLog = path.join(work, 'requests.log');
  writeFileSync(reqLog, '');
  proxy = spawn(process.execPath, [path.join(root, 'test/helpers/request-log-proxy.mjs'), new URL(server.endpoint).port, reqLog], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve) => proxy.stdout.once('data', (c) => resolve(Number(/listening (\d+)/.exec(c.toString())[1]))));
  const requests = () => readFileSync(reqLog, 'utf8').split('\n').filter(Boolean).length;
  mkdirSync(mp);
  const env = { ...process.env, AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey };
  execFileSync(process.execPath, [path.join(root, 'bin/s3vault.js'), 'mount', BUCKET, mp, '--endpoint', `http://127.0.0.1:${port}`, '--vault', path.join(work, 'vault'), '--log-file', path.join(work, 'mount.log'), '--listing-ttl', '3600', '--read-only'], { env, stdio: 'ignore' });
  const timed = (what, cmd, expect) => {
    const before = requests();
    const t0 = performance.now();
    const out = execFileSync('bash', ['-c', cmd], { encoding: 'utf8', timeout: 3_600_000, maxBuffer: 1 << 28 }).trim();
    const s = (performance.now() - t0) / 1000;
    if (expect !== undefined && out !== String(expect)) throw new Error(`${what}: got ${out}, expected ${expect}`);
    row(what, s, requests() - before, `→ ${out}`);
  };
  timed('s3vault: ls -f flat/ (cold)', `ls -f ${mp}/flat | grep -vc '^\\.\\.\\?$'`, N);
  timed('s3vault: ls -f flat/ (warm)', `ls -f ${mp}/flat | grep -vc '^\\.\\.\\?$'`, N);
  timed('s3vault: find tree/ (cold)', `find ${mp}/tree | wc -l`, N + dirs + 1);
  timed('s3vault: find tree/ (warm)', `find ${mp}/tree | wc -l`, N + dirs + 1);
  timed('s3vault: ls -l of one 100-entry dir (cold)', `ls -l ${mp}/tree/d00000 | wc -l`, Math.ceil(N / dirs) + 1);
  timed('s3vault: ls -l of the same dir (warm)', `ls -l ${mp}/tree/d00000 | wc -l`, Math.ceil(N / dirs) + 1);
  if (N <= 10_000) {
    // du stats every file: one HEAD each the first time (the POSIX attributes live in each object's metadata).
    timed('s3vault: du -s tree/ (warm dirs, cold files)', `du -s --apparent-size -B1 ${mp}/tree | cut -f1`, N);
    timed('s3vault: du -s tree/ (warm)', `du -s --apparent-size -B1 ${mp}/tree | cut -f1`, N);
  }
} finally {
  try {
    execFileSync(process.execPath, [path.join(root, 'bin/s3vault.js'), 'unmount', mp], { stdio: 'ignore', timeout: 120_000 });
  } catch {
    try {
      execFileSync('fusermount3', ['-uz', mp]);
    } catch {
      /* not mounted */
    }
  }
  proxy?.kill();
  client.destroy();
  await server.stop();
  const out = path.join(root, 'bench', 'results');
  mkdirSync(out, { recursive: true });
  const stamp = results.date.replace(/[:.]/g, '-');
  writeFileSync(path.join(out, `big-tree-${stamp}.json`), JSON.stringify(results, null, 2));
  writeFileSync(
    path.join(out, `big-tree-${stamp}.md`),
    `# big tree (${serverKind}, ${N} objects per tree, ${results.cores} cores, ${results.date})\n\n| what | s | requests | result |\n|---|---:|---:|---|\n${results.rows.map((r) => `| ${r.what} | ${r.seconds} | ${r.requests ?? ''} | ${r.note} |`).join('\n')}\n`,
  );
  rmSync(work, { recursive: true, force: true });
}
