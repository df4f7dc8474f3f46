#!/usr/bin/env node
// The whole stress check, one run per seed: a server on loopback (the embedded s3rver, or --server rgw), a mount,
// scripts/stress-mount.mjs on it, `flush --wait`, then a second mount of the bucket on a fresh vault compared with
// the first (test/helpers/model-run.mjs compare): what reached S3 must be what the first mount shows. Prints one
// line per seed; exits 1 if any run had unexpected errnos or a mismatch, and keeps that run's directory (vaults,
// logs) for a look.
//   node scripts/stress-check.mjs [--seeds 1,2,3] [--procs 6] [--ops 2000] [--server s3rver|rgw] [--verbose]
// Needs `npm run build`. Not part of the test suite: the faults it finds are races, seen in a few runs of ten.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// As bin/s3vault.js: the SDK's notice about future Node versions is noise here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opt } = parseArgs({
  options: {
    seeds: { type: 'string', default: '1,2,3' },
    procs: { type: 'string', default: '6' },
    ops: { type: 'string', default: '2000' },
    server: { type: 'string', default: 's3rver' },
    // The mounts log at debug level (each failed request, each passthrough decision): for a run that fails.
    verbose: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opt.help) {
  console.log('usage: node scripts/stress-check.mjs [--seeds 1,2,3] [--procs 6] [--ops 2000] [--server s3rver|rgw] [--verbose]');
  process.exit(0);
}
const { startBenchServer } = await import(path.join(root, 'bench/server.mjs'));
const BUCKET = 'stress';
const run = (cmd, args, env, timeoutSec) => spawnSync(cmd, args, { env: env ?? process.env, encoding: 'utf8', timeout: timeoutSec * 1000 });
const oneLine = (r) => `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().replace(/\s+/g, ' ').slice(0, 400);

async function check(seed) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `s3vault-stress-${seed}-`));
  for (const d of ['a/mnt', 'b/mnt', 'a/vault', 'b/vault', 'server']) mkdirSync(path.join(dir, d), { recursive: true });
  const { server, creds } = await startBenchServer(opt.server, path.join(dir, 'server'));
  const env = { ...process.env, AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey };
  const cli = (...args) => run(process.execPath, [path.join(root, 'bin/s3vault.js'), ...args], env, 600);
  const mounts = [];
  let ok = false;
  try {
    const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
    const client = new S3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: creds });
    await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
    client.destroy();
    const mount = (side) => {
      const mp = path.join(dir, side, 'mnt');
      const r = cli('mount', BUCKET, mp, '--endpoint', server.endpoint, '--vault', path.join(dir, side, 'vault'), '--log-file', path.join(dir, side, 'log'), ...(opt.verbose ? ['--verbose'] : []));
      if (r.status !== 0) throw new Error(`mount ${side}: ${oneLine(r)}`);
      mounts.push(mp);
      return mp;
    };
    const a = mount('a');
    mkdirSync(path.join(a, 't'));
    const stress = run(process.execPath, [path.join(root, 'scripts/stress-mount.mjs'), path.join(a, 't'), opt.procs, opt.ops, String(seed)], undefined, 1800);
    const flushed = cli('flush', '--wait', a);
    if (flushed.status !== 0) throw new Error(`flush: ${oneLine(flushed)}`);
    const b = mount('b');
    const compared = run(process.execPath, [path.join(root, 'test/helpers/model-run.mjs'), 'compare', path.join(a, 't'), path.join(b, 't')], undefined, 600);
    ok = stress.status === 0 && compared.status === 0;
    console.log(`seed ${seed}: ${stress.status === 0 ? 'no unexpected errno' : `unexpected errnos: ${oneLine(stress)}`}; ${compared.status === 0 ? 'S3 matches the mount' : `MISMATCH: ${oneLine(compared)}`}${ok ? '' : ` (kept: ${dir})`}`);
    return ok;
  } catch (err) {
    console.log(`seed ${seed}: failed to run: ${err.message} (kept: ${dir})`);
    return false;
  } finally {
    for (const mp of mounts) {
      if (cli('unmount', mp).status !== 0) run('fusermount3', ['-uz', mp], undefined, 30);
    }
    await server.stop();
    // A passed run's directory goes; a failed one's is kept for a look.
    if (ok) rmSync(dir, { recursive: true, force: true });
  }
}

let bad = 0;
for (const seed of opt.seeds.split(',').map(Number)) if (!(await check(seed))) bad++;
process.exit(bad ? 1 : 0);
