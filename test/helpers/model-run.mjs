// The randomized model test's worker: applies the same random operations to a mounted directory and to a local
// reference directory, and compares the two trees (names, kinds, sizes, permission bits, contents, link targets)
// after every step. Runs as its own process, so the test can bound it with a timeout (a hung mount fails the
// test instead of hanging it) and so the serving process never touches its own mount.
//   node model-run.mjs apply <mount> <ref> <seed> <ops>   → prints "ok <ops> ops" or the failing step and exits 1
//   node model-run.mjs compare <mount> <ref>              → compares once
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const [mode, mnt, ref, seedArg, opsArg] = process.argv.slice(2);

function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

function snapshot(root) {
  const out = {};
  const walk = (dir, rel) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) out[r] = `link -> ${fs.readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${(st.mode & 0o7777).toString(8)}`;
        walk(p, r);
      } else out[r] = `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${createHash('md5').update(fs.readFileSync(p)).digest('hex')}`;
    }
  };
  walk(root, '');
  return out;
}

function diff(a, b) {
  const lines = [];
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) if (a[k] !== b[k]) lines.push(`  ${k}: mount=${a[k] ?? '(missing)'} reference=${b[k] ?? '(missing)'}`);
  return lines;
}

function compare(label) {
  const d = diff(snapshot(mnt), snapshot(ref));
  if (d.length) {
    console.log(`MISMATCH ${label}\n${d.join('\n')}`);
    process.exit(1);
  }
}

if (mode === 'compare') {
  compare('after remount');
  console.log('ok trees equal');
  process.exit(0);
}

const seed = Number(seedArg);
// MODEL_HANDLES=0 leaves out the operations on handles kept open (the sequences of older seeds).
const handleOps = process.env.MODEL_HANDLES !== '0';
const total = Number(opsArg);
const rand = rng(seed);
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
// No '+' or '#' here: s3rver decodes x-amz-copy-source with decodeURI, so it cannot copy (rename) such keys;
// names with them round-trip in posix.test.ts (create, read, list).
const NAMES = ['a', 'b', 'c', 'd e', 'f%ü'];
const DIRS = ['', 'x', 'y', 'x/z'];
const randPath = () => {
  const d = pick(DIRS);
  return d ? `${d}/${pick(NAMES)}` : pick(NAMES);
};
const randBytes = (n) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
};

// Handles kept open across operations, the same ids on both sides (a handle exists only where both opens
// succeeded: a mismatch ends the run). Renames, unlinks and truncates then meet files still open, as editors,
// databases and build tools leave them.
const handles = new Map(); // root -> Map(id -> fd)
const fdOf = (root, id) => handles.get(root)?.get(id);

/** Run one operation on a root; the outcome is "ok" or the error code. */
function run(root, op) {
  const P = (p) => path.join(root, p);
  try {
    switch (op.kind) {
      case 'open': {
        const fd = fs.openSync(P(op.path), op.flags, op.mode);
        if (!handles.has(root)) handles.set(root, new Map());
        handles.get(root).set(op.id, fd);
        break;
      }
      case 'hwrite':
        return `ok ${fs.writeSync(fdOf(root, op.id), op.data, 0, op.data.length, op.offset)}`;
      case 'hread': {
        const buf = Buffer.alloc(op.length);
        const n = fs.readSync(fdOf(root, op.id), buf, 0, op.length, op.offset);
        return `ok ${createHash('md5').update(buf.subarray(0, n)).digest('hex')}`;
      }
      case 'htruncate':
        fs.ftruncateSync(fdOf(root, op.id), op.size);
        break;
      case 'hfsync':
        fs.fsyncSync(fdOf(root, op.id));
        break;
      case 'hstat': {
        const st = fs.fstatSync(fdOf(root, op.id));
        // A directory's size is the filesystem's own business (ext4 4096, s3vault 0).
        return `ok ${st.isDirectory() ? 'dir' : st.size} ${(st.mode & 0o7777).toString(8)}`;
      }
      case 'hclose': {
        const fd = fdOf(root, op.id);
        handles.get(root).delete(op.id);
        fs.closeSync(fd);
        break;
      }
      case 'utimes': {
        // Milliseconds: what s3vault keeps (docs/SEMANTICS.md, Attributes); binary fractions of a second, which
        // Node's conversion to a timespec through seconds as a double keeps exact.
        fs.utimesSync(P(op.path), op.time, op.time);
        return `ok ${fs.statSync(P(op.path)).mtimeMs}`;
      }
      case 'write': {
        const fd = fs.openSync(P(op.path), op.trunc ? 'w' : fs.existsSync(P(op.path)) ? 'r+' : 'w', op.mode);
        try {
          fs.writeSync(fd, op.data, 0, op.data.length, op.offset);
        } finally {
          fs.closeSync(fd);
        }
        break;
      }
      case 'append':
        fs.appendFileSync(P(op.path), op.data);
        break;
      case 'truncate':
        fs.truncateSync(P(op.path), op.size);
        break;
      case 'rename':
        fs.renameSync(P(op.path), P(op.to));
        break;
      case 'unlink':
        fs.unlinkSync(P(op.path));
        break;
      case 'mkdir':
        fs.mkdirSync(P(op.path), op.mode);
        break;
      case 'rmdir':
        fs.rmdirSync(P(op.path));
        break;
      case 'chmod':
        fs.chmodSync(P(op.path), op.mode);
        break;
      case 'symlink':
        fs.symlinkSync(op.target, P(op.path));
        break;
      case 'read': {
        const fd = fs.openSync(P(op.path), 'r');
        try {
          const buf = Buffer.alloc(op.length);
          const n = fs.readSync(fd, buf, 0, op.length, op.offset);
          return `ok ${createHash('md5').update(buf.subarray(0, n)).digest('hex')}`;
        } finally {
          fs.closeSync(fd);
        }
      }
    }
    return 'ok';
  } catch (err) {
    return err.code ?? String(err);
  }
}

let nextHandle = 1;
const openIds = () => [...(handles.get(ref)?.keys() ?? [])];
function handleOp() {
  const ids = openIds();
  // At most 6 open at once: the oldest is closed first.
  if (ids.length >= 6) return { kind: 'hclose', id: ids[0] };
  if (!ids.length || rand() < 0.2) return { kind: 'open', id: nextHandle++, path: randPath(), flags: pick(['r', 'r+', 'w+', 'a+', 'r+']), mode: pick([0o644, 0o600]) };
  const id = pick(ids);
  const r = rand();
  if (r < 0.35) return { kind: 'hwrite', id, offset: Math.floor(rand() * 40000), data: randBytes(Math.floor(rand() * 9000) + 1) };
  if (r < 0.55) return { kind: 'hread', id, offset: Math.floor(rand() * 40000), length: Math.floor(rand() * 50000) + 1 };
  if (r < 0.65) return { kind: 'htruncate', id, size: Math.floor(rand() * 30000) };
  if (r < 0.75) return { kind: 'hfsync', id };
  if (r < 0.85) return { kind: 'hstat', id };
  return { kind: 'hclose', id };
}

function randomOp() {
  if (handleOps && rand() < 0.3) return handleOp();
  if (rand() < 0.03) return { kind: 'utimes', path: rand() < 0.2 ? pick(DIRS.filter(Boolean)) : randPath(), time: new Date(1e12 + Math.floor(rand() * 1e8) * 1000 + pick([0, 125, 250, 500, 750])) };
  const r = rand();
  if (r < 0.25) {
    const big = rand() < 0.05;
    return { kind: 'write', path: randPath(), offset: big ? Math.floor(rand() * 1.5e6) : Math.floor(rand() * 20000), data: randBytes(Math.floor(rand() * (big ? 300000 : 9000)) + 1), trunc: rand() < 0.2, mode: pick([0o644, 0o600, 0o755]) };
  }
  if (r < 0.32) return { kind: 'append', path: randPath(), data: randBytes(Math.floor(rand() * 3000) + 1) };
  if (r < 0.4) return { kind: 'truncate', path: randPath(), size: Math.floor(rand() * 30000) };
  if (r < 0.52) return { kind: 'rename', path: rand() < 0.3 ? pick(DIRS.filter(Boolean)) : randPath(), to: rand() < 0.2 ? pick(DIRS.filter(Boolean)) : randPath() };
  if (r < 0.6) return { kind: 'unlink', path: randPath() };
  if (r < 0.7) return { kind: 'mkdir', path: rand() < 0.5 ? pick(DIRS.filter(Boolean)) : randPath(), mode: pick([0o755, 0o700, 0o750]) };
  if (r < 0.75) return { kind: 'rmdir', path: rand() < 0.5 ? pick(DIRS.filter(Boolean)) : randPath() };
  if (r < 0.83) return { kind: 'chmod', path: rand() < 0.2 ? pick(DIRS.filter(Boolean)) : randPath(), mode: pick([0o644, 0o600, 0o755, 0o700, 0o640]) };
  if (r < 0.88) {
    // Created links stay in the tree ('../b' only below the root); a rename can still move one to the root, where
    // it reaches one level up: the test gives both roots private, empty parents, so that lands alike.
    const p = randPath();
    return { kind: 'symlink', path: p, target: pick(['a', p.includes('/') ? '../b' : 'x/../b', 'x/z/c', 'nowhere']) };
  }
  return { kind: 'read', path: randPath(), offset: Math.floor(rand() * 20000), length: Math.floor(rand() * 70000) + 1 };
}

const timing = {};
const timed = (label, fn) => {
  const t = performance.now();
  const r = fn();
  const e = (timing[label] ??= { n: 0, ms: 0 });
  e.n++;
  e.ms += performance.now() - t;
  return r;
};
const show = (op) => JSON.stringify({ ...op, data: op.data ? `<${op.data.length} bytes>` : undefined });
for (let i = 1; i <= total; i++) {
  const op = randomOp();
  const want = run(ref, op);
  const got = timed(op.kind, () => run(mnt, op));
  if (process.env.MODEL_TRACE) console.log(`step ${i}: ${show(op)} → ${got}`);
  if (want !== got) {
    console.log(`MISMATCH step ${i} (seed ${seed}): ${show(op)}\n  mount: ${got}\n  reference: ${want}`);
    process.exit(1);
  }
  timed('compare', () => compare(`after step ${i} (seed ${seed}): ${show(op)}`));
}
console.log(`ok ${total} ops`);
console.log(`time on the mount by operation: ${Object.entries(timing).map(([k, v]) => `${k} ${v.n}× ${Math.round(v.ms)} ms`).join(', ')}`);
