/**
 * Bad input gets one clear line on stderr and a non-zero exit — never a stack trace, never a mount left
 * behind, never a damaged vault. Exit codes: 2 usage/config, 3 storage, 4 vault, 5 mountpoint/FUSE.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cliEnv, isMounted } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';

let s3: TestServer;
let base: string;

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: cliEnv(env), encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function expectOneLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^s3vault: error: /);
  expect(lines[0]).toMatch(pattern);
  expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
}

function freshDir(name: string): string {
  const d = path.join(base, name);
  mkdirSync(d, { recursive: true });
  return d;
}

async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket('exists');
  base = mkdtempSync(path.join(os.tmpdir(), 's3vault-cli-'));
});

afterAll(async () => {
  await s3?.stop();
  rmSync(base, { recursive: true, force: true });
});

describe('cli: clear errors for bad input', () => {
  it('--help works on every command and --version prints the version', () => {
    for (const cmd of [[], ['mount'], ['unmount'], ['up'], ['server']]) {
      const r = cli([...cmd, '--help']);
      expect(r.code, cmd.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/Usage: s3vault/);
    }
    expect(cli(['--version']).stdout.trim()).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version);
  });

  it('a missing bucket: exit 3, names the bucket problem', () => {
    const mp = freshDir('mp-nobucket');
    const r = cli(['mount', 'no-such-bucket', mp, '--endpoint', s3.endpoint, '--vault', path.join(base, 'v1'), '--foreground']);
    expect(r.code).toBe(3);
    expectOneLine(r.stderr, /no-such-bucket.*does not exist/);
    expect(isMounted(mp)).toBe(false);
  });

  it('an unreachable endpoint: exit 3, connection refused', async () => {
    const mp = freshDir('mp-unreachable');
    const r = cli(['mount', 'exists', mp, '--endpoint', `http://127.0.0.1:${await closedPort()}`, '--vault', path.join(base, 'v2')]);
    expect(r.code).toBe(3);
    expectOneLine(r.stderr, /connection refused/);
    expect(isMounted(mp)).toBe(false);
  });

  it('a missing or non-empty mountpoint: exit 5', () => {
    let r = cli(['mount', 'exists', path.join(base, 'nope'), '--endpoint', s3.endpoint]);
    expect(r.code).toBe(5);
    expectOneLine(r.stderr, /does not exist/);
    const full = freshDir('mp-full');
    writeFileSync(path.join(full, 'x'), 'x');
    r = cli(['mount', 'exists', full, '--endpoint', s3.endpoint]);
    expect(r.code).toBe(5);
    expectOneLine(r.stderr, /not empty/);
  });

  it('FUSE not available (no /dev/fuse, in a private mount namespace): exit 5', () => {
    const mp = freshDir('mp-nofuse');
    const script = `mount -t tmpfs none /dev && exec ${process.execPath} ${BIN} mount exists ${mp} --endpoint ${s3.endpoint} --foreground`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', script], { env: cliEnv(), encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(5);
    expectOneLine(r.stderr, /FUSE is not available: \/dev\/fuse is missing/);
  });

  it('a corrupt vault: exit 4, and the file is left as it was', () => {
    const vault = freshDir('v-corrupt');
    writeFileSync(path.join(vault, 'vault.db'), 'this is not a sqlite database, just garbage '.repeat(100));
    const r = cli(['mount', 'exists', freshDir('mp-corrupt'), '--endpoint', s3.endpoint, '--vault', vault, '--foreground']);
    expect(r.code).toBe(4);
    expectOneLine(r.stderr, /corrupt/);
    expect(readFileSync(path.join(vault, 'vault.db'), 'utf8')).toMatch(/^this is not a sqlite/);
  });

  it('a vault from a newer s3vault: exit 4, refused', () => {
    const vault = freshDir('v-newer');
    const db = new Database(path.join(vault, 'vault.db'));
    db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL); INSERT INTO schema_migrations VALUES (9999, 'future', 0)");
    db.close();
    const r = cli(['mount', 'exists', freshDir('mp-newer'), '--endpoint', s3.endpoint, '--vault', vault, '--foreground']);
    expect(r.code).toBe(4);
    expectOneLine(r.stderr, /schema version 9999, newer/);
  });

  it('a bad config file and a bad endpoint URL: exit 2', () => {
    const cfg = path.join(base, 'bad.json');
    writeFileSync(cfg, '{ not json');
    let r = cli(['mount', 'exists', freshDir('mp-cfg'), '--config', cfg]);
    expect(r.code).toBe(2);
    expectOneLine(r.stderr, /not valid JSON/);
    r = cli(['mount', 'exists', freshDir('mp-cfg2'), '--endpoint', 'not a url']);
    expect(r.code).toBe(2);
    expectOneLine(r.stderr, /endpoint/);
  });

  it('unmount of something not mounted: exit 5', () => {
    const r = cli(['unmount', freshDir('mp-not-mounted')]);
    expect(r.code).toBe(5);
    expectOneLine(r.stderr, /not mounted/);
  });

  it('unmount of a busy mount: exit 5, names who uses it, stays mounted; --lazy detaches it and the process ends with the last file', async () => {
    const mp = freshDir('mp-busy');
    const r = cli(['mount', 'exists', mp, '--endpoint', s3.endpoint, '--vault', path.join(base, 'v-busy'), '--flush-delay', '60000']);
    expect(r.code, r.stderr).toBe(0);
    const holder = spawn('sleep', ['300'], { cwd: mp, stdio: 'ignore' }); // a shell's working directory, as it were
    try {
      writeFileSync(path.join(mp, 'busy.txt'), 'kept\n');
      const busy = cli(['unmount', mp]);
      expect(busy.code).toBe(5);
      expectOneLine(busy.stderr, new RegExp(`busy, still mounted \\(its changes are uploaded\\): in use by sleep \\(pid ${holder.pid}\\).*--lazy`));
      expect(isMounted(mp)).toBe(true);
      expect(readFileSync(path.join(mp, 'busy.txt'), 'utf8')).toBe('kept\n'); // still served
      expect((await s3.get('exists', 'busy.txt')).toString()).toBe('kept\n'); // the unmount's flush ran
      const pid = Number(spawnSync('pgrep', ['-f', `mount exists ${mp} `], { encoding: 'utf8' }).stdout.trim().split('\n')[0]);
      expect(pid).toBeGreaterThan(0);
      const lazy = cli(['unmount', '--lazy', mp]);
      expect(lazy.code, lazy.stderr).toBe(0);
      expect(lazy.stdout).toMatch(/detached .* serves the files still open there/);
      expect(isMounted(mp)).toBe(false);
      holder.kill('SIGKILL');
      let alive = true;
      for (let i = 0; i < 100 && alive; i++, await new Promise((res) => setTimeout(res, 100))) alive = existsSync(`/proc/${pid}`);
      expect(alive).toBe(false);
    } finally {
      holder.kill('SIGKILL');
      if (isMounted(mp)) spawnSync('fusermount3', ['-uz', mp]);
    }
  });

  it('a vault in use by a running mount is refused: exit 4', async () => {
    const vault = path.join(base, 'v-shared');
    const mp1 = freshDir('mp-shared-1');
    const r1 = cli(['mount', 'exists', mp1, '--endpoint', s3.endpoint, '--vault', vault]);
    try {
      expect(r1.code, r1.stderr).toBe(0);
      expect(isMounted(mp1)).toBe(true);
      const r2 = cli(['mount', 'exists', freshDir('mp-shared-2'), '--endpoint', s3.endpoint, '--vault', vault, '--foreground']);
      expect(r2.code).toBe(4);
      expectOneLine(r2.stderr, /in use/);
    } finally {
      const u = cli(['unmount', mp1]);
      if (u.code !== 0) spawnSync('fusermount3', ['-uz', mp1]);
    }
    expect(isMounted(mp1)).toBe(false);
  });
});
