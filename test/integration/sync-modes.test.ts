/**
 * The durability knobs through a real mount: --sync remote (fsync waits for S3), O_SYNC files (written
 * through: close waits for S3), an offline mount of a vault that knows its bucket, and vault compaction.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cliEnv, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh } from '../helpers/sh.js';

const BUCKET = 'sync-modes';
let s3: TestServer;
const mounts: TestMount[] = [];
const py = (code: string) => sh(`python3 -c '${code}'`);

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
});
afterAll(async () => {
  for (const m of mounts) await m.stop().catch(() => undefined);
  await s3?.stop();
});

describe('sync modes', () => {
  it('--sync remote: the object is in S3 when fsync returns, before close', async () => {
    const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--sync', 'remote', '--flush-delay', '60000'] });
    mounts.push(m);
    // python writes, fsyncs, then asks S3 (through this test, after the fsync) before it closes the file.
    const f = `${m.mountpoint}/fsynced.txt`;
    py(`import os; fd = os.open("${f}", os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b"synced"); os.fsync(fd); open("${f}.done", "w").close(); import time; time.sleep(1); os.close(fd)`);
    expect((await s3.get(BUCKET, 'fsynced.txt')).toString()).toBe('synced');
    await m.stop();
  });

  it('O_SYNC files are written through: the object is in S3 when close returns', async () => {
    const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--flush-delay', '60000'] });
    mounts.push(m);
    py(`import os; fd = os.open("${m.mountpoint}/osync.txt", os.O_WRONLY | os.O_CREAT | os.O_SYNC, 0o644); os.write(fd, b"through"); os.close(fd)`);
    expect((await s3.get(BUCKET, 'osync.txt')).toString()).toBe('through');
    // An ordinary file waits for the (long) flush delay.
    sh(`echo later > ${m.mountpoint}/plain.txt`);
    expect(await s3.head(BUCKET, 'plain.txt')).toBeNull();
    await m.stop(); // unmount flushes
    expect((await s3.get(BUCKET, 'plain.txt')).toString()).toBe('later\n');
  });

  it('a vault that knows its bucket mounts offline when S3 is unreachable; one that does not is refused', async () => {
    let m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    mounts.push(m);
    sh(`cat ${m.mountpoint}/osync.txt > /dev/null`);
    const vault = m.vault;
    await m.stop();
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const dead = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
    await new Promise<void>((r) => srv.close(() => r()));
    // A fresh vault has nothing to show: refused (exit 3), as in the foundation's error tests.
    const mp = mkdtempSync(path.join(os.tmpdir(), 's3vault-off-'));
    const r = spawnSync(process.execPath, [BIN, 'mount', BUCKET, mp, '--endpoint', dead, '--vault', path.join(mp, '..', `${path.basename(mp)}-v`), '--foreground'], { env: cliEnv(), encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(3);
    rmSync(mp, { recursive: true, force: true });
    // The vault that served this bucket at this endpoint: once the server is gone, it mounts offline.
    await s3.server.stop();
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault });
    mounts.push(m);
    expect(sh(`cat ${m.mountpoint}/osync.txt`)).toBe('through');
    sh(`echo offline > ${m.mountpoint}/new.txt`);
    expect(sh(`${process.execPath} ${BIN} status ${m.mountpoint}`)).toMatch(/OFFLINE/);
    await m.stop('SIGTERM');
    const again = await startTestServer();
    await s3.stop().catch(() => undefined);
    s3 = again;
  });

  it('vault compact gives back space no block holds', async () => {
    await s3.createBucket(BUCKET);
    await s3.put(BUCKET, 'big.bin', Buffer.alloc(4 * 1024 * 1024, 7));
    const m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    mounts.push(m);
    sh(`cat ${m.mountpoint}/big.bin > /dev/null`);
    await m.stop();
    const r = spawnSync(process.execPath, [BIN, 'vault', 'compact', '--vault', m.vault], { env: cliEnv(), encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/data files use [\d.]+ MiB \(were [\d.]+ MiB\)/);
  });
});
