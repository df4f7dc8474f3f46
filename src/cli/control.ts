/**
 * The control channel between the CLI and a running mount: a Unix socket, one JSON request per connection,
 * answered by JSON lines (progress…, then a result or an error). The registry (mountpoint.ts: under the temporary
 * directory, named for the mountpoint and the process) tells the CLI which socket serves a mountpoint.
 */
import net from 'node:net';
import { rmSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { Maintenance, Progress } from '../fs/mirror/maintenance.js';

export interface ControlRequest {
  op: 'pin' | 'unpin' | 'status' | 'flush' | 'reset-errors' | 'refresh' | 'versions' | 'restore' | 'unmount';
  /** unmount: upload pending changes first (default) or leave them for the next start. */
  flush?: boolean;
  /** unmount: detach a busy mount anyway (umount -l); otherwise a busy mount stays and the answer says so. */
  lazy?: boolean;
  /** flush: wait until the uploads are done. */
  wait?: boolean;
  /** A path inside the mount, "/" for its root. */
  path: string;
  /** restore: the instant whose version becomes current again (ISO 8601). */
  asOf?: string;
}

export type ControlMessage = { type: 'progress'; progress: Progress } | { type: 'result'; data: unknown } | { type: 'error'; message: string };

export interface ControlHooks {
  /**
   * Flush (unless told not to, with progress), then unmount; resolves when the unmount has started. busy: a file
   * is open in the mount (or a working directory is there) and `lazy` was not asked: it stays mounted and served.
   */
  unmount(flush: boolean, progress: (p: Progress) => void, lazy: boolean): Promise<{ uploaded: number; left: number; busy?: boolean }>;
  /** Forget cached names and attributes under a path (and the kernel's); resolves once the kernel has forgotten. */
  refresh(path: string): Promise<void>;
}

export interface ControlServer extends net.Server {
  /**
   * Resolves once every request received so far has its answer written (or after `ms`). The process must not exit
   * before: an unmount asked here ends the mount, and the CLI that asked would otherwise read a closed connection
   * instead of its result.
   */
  answered(ms: number): Promise<void>;
}

export function startControlServer(socketPath: string, maintenance: Maintenance, hooks: ControlHooks, log: Logger): ControlServer {
  rmSync(socketPath, { force: true });
  const pending = new Set<Promise<void>>();
  const server = net.createServer((conn) => {
    let buf = '';
    const send = (m: ControlMessage): void => {
      conn.write(`${JSON.stringify(m)}\n`);
    };
    conn.on('error', () => undefined);
    conn.on('data', (chunk) => {
      buf += chunk.toString();
      if (!buf.includes('\n')) return;
      let req: ControlRequest;
      try {
        req = JSON.parse(buf.slice(0, buf.indexOf('\n'))) as ControlRequest;
      } catch {
        send({ type: 'error', message: 'bad request' });
        conn.end();
        return;
      }
      let last = 0;
      const progress = (p: Progress): void => {
        // At most ~10 updates a second: the CLI redraws a bar, it does not need every block.
        if (Date.now() - last < 100 && p.files < p.totalFiles) return;
        last = Date.now();
        send({ type: 'progress', progress: p });
      };
      const run = async (): Promise<unknown> => {
        switch (req.op) {
          case 'pin':
            return maintenance.pin(req.path, progress);
          case 'unpin':
            return { files: maintenance.unpin(req.path) };
          case 'status':
            return { files: maintenance.status(req.path), ...maintenance.queue(req.path) };
          case 'reset-errors':
            return { files: maintenance.resetErrors(req.path) };
          case 'refresh':
            await hooks.refresh(req.path);
            return {};
          case 'versions':
            return { versions: await maintenance.versions(req.path) };
          case 'restore': {
            const r = await maintenance.restore(req.path, new Date(String(req.asOf)));
            await hooks.refresh(req.path);
            return r;
          }
          case 'unmount':
            return hooks.unmount(req.flush !== false, progress, req.lazy === true);
          case 'flush':
            return maintenance.flush(req.path, req.wait === true, progress);
          default:
            throw new Error(`unknown operation ${String((req as { op: unknown }).op)}`);
        }
      };
      const answer = (m: ControlMessage): Promise<void> =>
        new Promise((resolve) => {
          send(m);
          conn.once('close', () => resolve());
          conn.end(() => resolve());
        });
      const done = run().then(
        (data) => answer({ type: 'result', data }),
        (err: unknown) => {
          log.error({ op: req.op, path: req.path, err: (err as Error).message }, 'control request failed');
          return answer({ type: 'error', message: (err as Error).message });
        },
      );
      pending.add(done);
      void done.finally(() => pending.delete(done));
    });
  });
  server.listen(socketPath);
  server.unref();
  return Object.assign(server, {
    answered: async (ms: number): Promise<void> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
      await Promise.race([Promise.all(pending), late]);
      clearTimeout(timer);
    },
  });
}

/** Send one request; calls onProgress for each progress line; resolves with the result. */
export function controlRequest(socketPath: string, req: ControlRequest, onProgress?: (p: Progress) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(socketPath);
    let buf = '';
    let settled = false;
    conn.on('connect', () => conn.write(`${JSON.stringify(req)}\n`));
    conn.on('data', (chunk) => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(buf.slice(0, nl)) as ControlMessage;
        buf = buf.slice(nl + 1);
        if (m.type === 'progress') onProgress?.(m.progress);
        else {
          settled = true;
          if (m.type === 'result') resolve(m.data);
          else reject(new Error(m.message));
        }
      }
    });
    conn.on('error', (err) => reject(new Error(`cannot reach the s3vault process (${err.message})`)));
    conn.on('close', () => {
      if (!settled) reject(new Error('the s3vault process closed the connection'));
    });
  });
}
