#!/usr/bin/env node
// Several processes applying random changes to one small tree on a mount at once: writes, truncates, renames of
// files and directories (onto each other, into each other), removes (rm -r too), mkdir/rmdir, chmod, symlinks,
// reads, listings, and handles kept open across them. Prints, per process, the errnos other than the expected
// ones (ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, EINVAL, EBADF, ELOOP), each with its operation; exits 1 if there
// were any.
//   node scripts/stress-mount.mjs <dir on the mount> [processes=6] [ops=2000] [seed=1]
// Then check what reached S3: `s3vault flush --wait`, mount the bucket again with a fresh vault, and compare the
// two trees (test/helpers/model-run.mjs compare <first> <second>); scripts/stress-check.mjs does all of it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [root, procArg = '6', opsArg = '2000', seedArg = '1', worker] = process.argv.slice(2);
if (!root) {
  console.error('usage: node scripts/stress-mount.mjs <dir on the mount> [processes] [ops] [seed]');
  process.exit(2);
}

if (worker === undefined) {
  const runs = Array.from({ length: Number(procArg) }, (_, i) =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [fileURLToPath(import.meta.url), root, procArg, opsArg, String(Number(seedArg) * 100 + i), 'worker'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('close', (code) => resolve({ i, code, out: out.trim() }));
    }),
  );
  let bad = 0;
  for (const r of await Promise.all(runs)) {
    console.log(`process ${r.i}: ${r.out || '(no output)'}`);
    if (r.code !== 0) bad++;
  }
  process.exit(bad ? 1 : 0);
}

let s = Number(seedArg) >>> 0 || 1;
const rand = () => {
  s ^= s << 13;
  s >>>= 0;
  s ^= s >>> 17;
  s ^= s << 5;
  s >>>= 0;
  return s / 4294967296;
};
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const NAMES = ['a', 'b', 'c', 'd'];
const DIRS = ['', 'x', 'y', 'x/z'];
const rp = () => {
  const d = pick(DIRS);
  return d ? `${d}/${pick(NAMES)}` : pick(NAMES);
};
const dir = () => pick(DIRS.filter(Boolean));
const P = (p) => path.join(root, p);
// ELOOP: symbolic links made at random point at each other (a -> b, b -> a).
const EXPECTED = new Set(['ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ENOTEMPTY', 'EINVAL', 'EBADF', 'ELOOP']);
const unexpected = [];
const fds = [];
for (let i = 0; i < Number(opsArg); i++) {
  const r = rand();
  let op = '';
  // CLOCK_MONOTONIC, as the kernel's trace with trace_clock "mono": a failure's requests can be found there by pid.
  const t0 = process.hrtime.bigint();
  try {
    if (r < 0.25) {
      op = 'write';
      const fd = fs.openSync(P(rp()), pick(['w', 'a', 'r+']));
      fs.writeSync(fd, Buffer.alloc(Math.floor(rand() * 200000), i & 255), 0, undefined, Math.floor(rand() * 100000));
      fs.closeSync(fd);
    } else if (r < 0.35) {
      op = 'rename';
      fs.renameSync(P(rand() < 0.3 ? dir() : rp()), P(rand() < 0.3 ? dir() : rp()));
    } else if (r < 0.45) {
      op = 'unlink';
      fs.unlinkSync(P(rp()));
    } else if (r < 0.55) {
      op = 'mkdir';
      fs.mkdirSync(P(rand() < 0.5 ? dir() : rp()));
    } else if (r < 0.6) {
      op = 'rmdir';
      fs.rmdirSync(P(rand() < 0.5 ? dir() : rp()));
    } else if (r < 0.7) {
      op = 'read';
      fs.readFileSync(P(rp()));
    } else if (r < 0.75) {
      op = 'truncate';
      fs.truncateSync(P(rp()), Math.floor(rand() * 50000));
    } else if (r < 0.8) {
      op = 'list';
      const d = pick(DIRS);
      for (const e of fs.readdirSync(P(d))) {
        try {
          fs.lstatSync(P(path.join(d, e)));
        } catch (err) {
          if (!EXPECTED.has(err.code)) throw err;
        }
      }
    } else if (r < 0.9) {
      op = 'handle';
      if (fds.length < 4) fds.push(fs.openSync(P(rp()), 'r+'));
      else {
        const fd = fds.shift();
        fs.writeSync(fd, 'hello', Math.floor(rand() * 1000));
        fs.fstatSync(fd);
        fs.closeSync(fd);
      }
    } else if (r < 0.95) {
      op = 'chmod';
      fs.chmodSync(P(rp()), pick([0o644, 0o600, 0o755]));
    } else if (r < 0.98) {
      op = 'symlink';
      const link = P(rp());
      if (rand() < 0.5) fs.symlinkSync(pick(NAMES), link);
      else fs.readlinkSync(link);
    } else {
      // rm -r of a directory while the others write into it.
      op = 'rm -r';
      fs.rmSync(P(dir()), { recursive: true, force: true });
    }
  } catch (err) {
    if (!EXPECTED.has(err.code)) unexpected.push(`${op}: ${err.message} [pid ${process.pid}, ${Number(t0) / 1e9}-${Number(process.hrtime.bigint()) / 1e9} s mono]`);
  }
}
for (const fd of fds) fs.closeSync(fd);
console.log(unexpected.length ? `${unexpected.length} unexpected: ${unexpected.join('; ')}` : `ok ${opsArg} ops`);
process.exit(unexpected.length ? 1 : 0);
