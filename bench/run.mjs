#!/usr/bin/env node
// `npm run bench`: the side-by-side benchmark (bench/compare.mjs) — local disk, the raw AWS SDK, s3vault, and s3fs
// and rclone when installed, on one S3 server started for it. Options pass through:
//   npm run bench                      full sizes (1 GiB, 10 000 entries, 5 000 files…), median of 3 runs
//   npm run bench -- --quick           small sizes, 1 run (a few minutes)
//   npm run bench -- --server rgw      on the Ceph RADOS Gateway instead of s3rver
//   npm run bench -- --only read,ls    some workloads: write, read, fio, small, ls, rename, rm, untar
// Each workload runs rep by rep: the i-th run of s3vault, of each peer and of the local-disk and raw-SDK references
// follow each other within minutes, in an order that turns each rep, so that a slow phase of the machine falls on
// all of them alike.
// Other figures: bench/dd.sh and bench/vault.sh (dd and fio against local disk), bench/big-tree.mjs (100 000-entry
// directories and trees), bench/raw-sdk-get.mjs and bench/vault-read.mjs (cold-read references).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const r = spawnSync(process.execPath, [path.join(root, 'bench', 'compare.mjs'), ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  // The SDK warns about Node 20 as it loads, before compare.mjs could turn that off (only "true" does).
  env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
});
process.exit(r.status ?? 1);
