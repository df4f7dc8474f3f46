/**
 * Real programs on the mount, each also run on local disk for comparison (times are printed, never asserted:
 * speed lives in the benchmark): git clone + git status, tar x then tar c round trip, rsync -a round trip,
 * sqlite3 creating and querying a database file.
 */
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh, shResult } from '../helpers/sh.js';
import { scratchDir } from '../helpers/scratch.js';

const BUCKET = 'programs-test';
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let s3: TestServer;
let m: TestMount;
let mp: string;
let work: string;
let tree: string;
const times: string[] = [];

/** Every entry's path, mode, size (files), mtime at the given precision (tar keeps whole seconds; s3vault ms) and link. */
function listing(dir: string, mtimeDigits: number): string {
  return sh(`cd ${dir} && find . -mindepth 1 \\( -type d -printf '%p %m dir %T@ %l\\n' \\) -o \\( ! -type d -printf '%p %m %s %T@ %l\\n' \\) | sort`)
    .split('\n')
    .map((l) => l.replace(/ (\d+)\.(\d+) /, (_, sec: string, frac: string) => ` ${sec}${mtimeDigits ? `.${frac.slice(0, mtimeDigits)}` : ''} `))
    .join('\n');
}

/** Run on the mount and on local disk; print both times. */
function both(label: string, run: (dir: string) => void): void {
  const local = path.join(work, 'local', label.replace(/\W+/g, '-'));
  const onMount = path.join(mp, label.replace(/\W+/g, '-'));
  mkdirSync(local, { recursive: true });
  mkdirSync(onMount, { recursive: true });
  let t = performance.now();
  run(local);
  const localMs = performance.now() - t;
  t = performance.now();
  run(onMount);
  const mountMs = performance.now() - t;
  times.push(`${label}: s3vault ${(mountMs / 1000).toFixed(2)} s, local disk ${(localMs / 1000).toFixed(2)} s`);
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
  mp = m.mountpoint;
  work = scratchDir('programs');
  // A source tree of a few hundred files: this project's sources and a dependency's.
  tree = path.join(work, 'tree');
  cpSync(path.join(ROOT, 'src'), path.join(tree, 'src'), { recursive: true });
  cpSync(path.join(ROOT, 'node_modules', 'zod'), path.join(tree, 'zod'), { recursive: true });
  sh(`chmod 755 ${tree}/src/log.ts && ln -s src/log.ts ${tree}/link-to-log && touch -h -d @1600000000 ${tree}/src/config.ts`);
});

afterAll(async () => {
  console.log(`real programs (one run each):\n  ${times.join('\n  ')}`);
  await m?.stop();
  await s3?.stop();
});

describe('real programs on the mount', () => {
  it('git clone of a local repository, then git status is clean and git fsck passes', () => {
    const repo = path.join(work, 'repo');
    sh(`git init -q ${repo} && cp -r ${tree}/. ${repo}/ && cd ${repo} && git add -A && git -c user.name=t -c user.email=t@t commit -qm init`, 120);
    both('git clone', (dir) => {
      sh(`git clone -q ${repo} ${dir}/clone`, 300);
      expect(sh(`git -C ${dir}/clone status --porcelain`, 120)).toBe('');
    });
    sh(`git -C ${mp}/git-clone/clone fsck --full 2>&1`, 300);
    sh(`cd ${mp}/git-clone/clone && echo change >> src/log.ts && git status --porcelain | grep -q 'M src/log.ts' && git -c user.name=t -c user.email=t@t commit -qam change && git log --oneline | wc -l | grep -q 2`, 120);
  });

  it('tar x then tar c round-trips the tree (contents, modes, times, links)', () => {
    const archive = path.join(work, 'tree.tar');
    sh(`tar cf ${archive} -C ${tree} .`);
    both('tar x', (dir) => sh(`tar xf ${archive} -C ${dir}`, 300));
    const back = path.join(work, 'tar-back');
    mkdirSync(back);
    sh(`tar cf - -C ${mp}/tar-x . | tar xf - -C ${back}`, 300);
    sh(`diff -r --no-dereference ${tree} ${back}`);
    expect(listing(back, 0)).toBe(listing(tree, 0));
  });

  it('rsync -a round-trips the tree, and a second rsync finds nothing to do', () => {
    both('rsync -a', (dir) => sh(`rsync -a ${tree}/ ${dir}/`, 300));
    expect(sh(`rsync -a --dry-run --itemize-changes ${tree}/ ${mp}/rsync-a/`, 300)).toBe('');
    const back = path.join(work, 'rsync-back');
    sh(`rsync -a ${mp}/rsync-a/ ${back}/`, 300);
    sh(`diff -r --no-dereference ${tree} ${back}`);
    expect(listing(back, 3)).toBe(listing(tree, 3));
  });

  it('sqlite3 creates, fills and queries a database file (rollback journal and WAL)', () => {
    const sql = path.join(work, 'fill.sql');
    const rows = Array.from({ length: 2000 }, (_, i) => `insert into t values (${i}, '${'row'.repeat(i % 20)}');`).join('\n');
    writeFileSync(sql, `create table t (id integer primary key, v text);\nbegin;\n${rows}\ncommit;\ncreate index tv on t(v);\n`);
    both('sqlite3', (dir) => {
      sh(`sqlite3 ${dir}/db.sqlite < ${sql}`, 120);
      expect(sh(`sqlite3 ${dir}/db.sqlite 'select count(*), sum(id) from t; pragma integrity_check;'`, 60)).toBe('2000|1999000\nok\n');
      sh(`sqlite3 ${dir}/wal.sqlite 'pragma journal_mode=wal; create table w(x); insert into w values (1),(2),(3);'`, 60);
      expect(sh(`sqlite3 ${dir}/wal.sqlite 'select sum(x) from w;'`, 60)).toBe('6\n');
    });
    // A second process holding a write lock makes another writer wait (locks are local to the mount, and work).
    const db = `${mp}/sqlite3/db.sqlite`;
    const r = shResult(`(echo 'begin exclusive;'; sleep 2; echo 'commit;') | sqlite3 ${db} & sleep 0.5; sqlite3 -cmd '.timeout 0' ${db} 'begin exclusive; commit;'; s=$?; wait; exit $s`, 60);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/database is locked/);
    expect(sh(`sqlite3 -cmd '.timeout 0' ${db} 'begin exclusive; commit;' && echo free`, 60)).toBe('free\n');
  });
});
