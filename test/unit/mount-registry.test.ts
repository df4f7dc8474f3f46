/**
 * The registry that maps a mountpoint to its s3vault process and control socket, with two processes on one
 * mountpoint: a daemon whose mount was taken away (fusermount3 -u) still uploads while a new one mounts there.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { controlSocket, mountOwner, registerMount, unregisterMount } from '../../src/cli/mountpoint.js';

const listen = (socket: string): Promise<net.Server> =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(socket, () => resolve(server));
  });
const close = (server: net.Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

describe('mount registry', () => {
  const savedTmp = process.env.TMPDIR;
  let tmp: string;
  let other: ReturnType<typeof spawn> | undefined;
  beforeEach(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'registry-'));
    process.env.TMPDIR = tmp;
  });
  afterEach(() => {
    other?.kill('SIGKILL');
    other = undefined;
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
    rmSync(tmp, { recursive: true, force: true });
  });

  it('an old daemon ending after a new one registered on its mountpoint leaves the new one reachable', async () => {
    const mp = path.join(tmp, 'mnt');
    // The old daemon: this process. The new one: a live child process.
    other = spawn('sleep', ['30'], { stdio: 'ignore' });
    const newPid = other.pid!;
    const oldServer = await listen(registerMount(mp, process.pid));
    expect(controlSocket(mp)).toMatch(new RegExp(`\\.${process.pid}\\.sock$`));
    const newSocket = registerMount(mp, newPid);
    const newServer = await listen(newSocket);
    try {
      expect(controlSocket(mp)).toBe(newSocket);
      expect(mountOwner(mp)).toBe(newPid);
      // The old one ends: its listener closes (libuv removes the path it listened on) and it unregisters.
      await close(oldServer);
      unregisterMount(mp, process.pid);
      expect(controlSocket(mp)).toBe(newSocket);
      expect(existsSync(newSocket)).toBe(true);
      expect(mountOwner(mp)).toBe(newPid);
      // server.close waits for its connections: this one ends here.
      await new Promise<void>((resolve, reject) => {
        const c = net.connect(newSocket, () => (c.destroy(), resolve())).once('error', reject);
      });
    } finally {
      await close(newServer);
    }
    unregisterMount(mp, newPid);
    expect(mountOwner(mp)).toBeUndefined();
    expect(readdirSync(path.join(tmp, 's3vault-mounts'))).toEqual([]);
  });

  it('a registration removes the entries of processes that are gone', () => {
    const dead = spawnSync('true').pid!;
    const dir = path.join(tmp, 's3vault-mounts');
    registerMount(path.join(tmp, 'a'), process.pid);
    // Left by a daemon killed with -9 (and by an earlier version, whose socket had no pid in its name).
    writeFileSync(path.join(dir, '0123456789abcdef.pid'), String(dead));
    writeFileSync(path.join(dir, '0123456789abcdef.sock'), '');
    writeFileSync(path.join(dir, `fedcba9876543210.${dead}.sock`), '');
    writeFileSync(path.join(dir, 'not-ours.txt'), '');
    registerMount(path.join(tmp, 'b'), process.pid);
    expect(readdirSync(dir).sort()).toEqual([path.basename(controlSocket(path.join(tmp, 'a'))).replace(/\.\d+\.sock$/, '.pid'), path.basename(controlSocket(path.join(tmp, 'b'))).replace(/\.\d+\.sock$/, '.pid'), 'not-ours.txt'].sort());
  });
});
