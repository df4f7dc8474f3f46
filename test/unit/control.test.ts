/**
 * The control channel: a mount asked to unmount ends itself, and must not exit before the CLI that asked has its
 * answer. Before `answered()`, an unmount whose end the process reached first left `s3vault unmount` printing
 * "the s3vault process closed the connection" and exiting non-zero, though the unmount had succeeded.
 */
import type { Socket } from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { controlRequest, startControlServer, type ControlServer } from '../../src/cli/control.js';
import type { Maintenance } from '../../src/fs/mirror/maintenance.js';
import type { Logger } from '../../src/log.js';
import { scratchDir } from '../helpers/scratch.js';

const quiet = { error: () => undefined } as unknown as Logger;
let server: ControlServer | undefined;

afterEach(() => {
  server?.close();
  server = undefined;
});

describe('control channel', () => {
  it('answered() waits for the answer of a request still running; the answer then survives the process ending', async () => {
    const socket = path.join(scratchDir('control'), 'ctl.sock');
    let entered!: () => void;
    const inHook = new Promise<void>((r) => (entered = r));
    server = startControlServer(socket, {} as Maintenance, {
      unmount: async () => {
        entered();
        await new Promise((r) => setTimeout(r, 300));
        return { uploaded: 1, left: 0 };
      },
      refresh: async () => undefined,
    }, quiet);
    const conns: Socket[] = [];
    server.on('connection', (c: Socket) => conns.push(c));
    const reply = controlRequest(socket, { op: 'unmount', path: '/', flush: true });
    await inHook;
    const t0 = Date.now();
    await server.answered(5000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    // What process exit does to the connections: the answer was written before, so the client still reads it.
    for (const c of conns) c.destroy();
    await expect(reply).resolves.toEqual({ uploaded: 1, left: 0 });
  });

  it('answered() gives up after its time when a request never ends', async () => {
    const socket = path.join(scratchDir('control'), 'ctl.sock');
    server = startControlServer(socket, {} as Maintenance, {
      unmount: () => new Promise(() => undefined),
      refresh: async () => undefined,
    }, quiet);
    const conns: Socket[] = [];
    server.on('connection', (c: Socket) => conns.push(c));
    const reply = controlRequest(socket, { op: 'unmount', path: '/', flush: true }).catch((err: Error) => err.message);
    while (conns.length === 0) await new Promise((r) => setTimeout(r, 10));
    const t0 = Date.now();
    await server.answered(200);
    expect(Date.now() - t0).toBeLessThan(1000);
    for (const c of conns) c.destroy();
    expect(await reply).toBe('the s3vault process closed the connection');
  });
});
