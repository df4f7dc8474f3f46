/**
 * The embedded S3-compatible server: s3rver (npm) run as a child process on loopback. It is what `s3vault`
 * mounts when no bucket is given, and what the tests and the benchmark talk to. A child process, not an
 * in-process server, so it never competes with the FUSE-serving main thread.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export interface EmbeddedServer {
  endpoint: string;
  port: number;
  /** The server process now (a new one after a restart). */
  readonly pid: number;
  stop(): Promise<void>;
}

export interface EmbeddedServerOptions {
  dataDir: string;
  /** Buckets created at start (s3rver --configure-bucket). */
  buckets?: string[];
  /** 0 (default): any free port. */
  port?: number;
  startTimeoutMs?: number;
  /**
   * The server ended without being asked to (it crashed, or was killed): what it last printed. It is started again
   * on the same port, so the mount's probe finds it back and the uploads resume; `restarted` says whether that
   * worked (false: it is tried again later).
   */
  onExit?: (info: { code: number | null; signal: string | null; output: string; restarted: boolean }) => void;
}

/** The credentials s3rver accepts (it does not check signatures). */
export const EMBEDDED_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

/**
 * The longest name the embedded server can store. s3rver keeps a key's last segment as files named
 * `<segment>._S3rver_metadata.json` (the longest of its suffixes) on a filesystem whose names end at 255 bytes;
 * a longer one failed its write stream, which s3rver does not handle, and the server exited.
 */
export const EMBEDDED_NAME_MAX = 255 - '._S3rver_metadata.json'.length;

export function s3rverBin(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('s3rver/package.json')), 'bin', 's3rver.js');
}

/**
 * Preloaded into the server: it exits when its stdin ends, which is when the process that started it is gone, even
 * by `kill -9` (the pipe's other end closes with it). Before, a killed mount left its server running for good, and
 * the next start began another one beside it.
 */
const EXIT_WITH_PARENT = 'data:text/javascript,process.stdin.on("end",()=>process.exit(0)).resume()';

/** Restart delays after unexpected exits: the first at once-ish, doubling while it keeps failing. */
const RESTART_FIRST_MS = 200;
const RESTART_MAX_MS = 30_000;
/** A server that stayed up this long is healthy again: the next restart starts from the first delay. */
const RESTART_RESET_MS = 60_000;
/** How much of what the server printed last is kept for the report of its exit. */
const OUTPUT_TAIL = 4000;

export async function startEmbeddedServer(options: EmbeddedServerOptions): Promise<EmbeddedServer> {
  mkdirSync(options.dataDir, { recursive: true });
  const spawnServer = (port: number): ChildProcess => {
    const args = ['--openssl-legacy-provider', '--import', EXIT_WITH_PARENT, s3rverBin(), '-d', options.dataDir, '-a', '127.0.0.1', '-p', String(port), '--no-vhost-buckets'];
    for (const b of options.buckets ?? []) args.push('--configure-bucket', b);
    // --openssl-legacy-provider: s3rver's continuation tokens use DES (spec/test-servers.md).
    // Its own process group (detached): Ctrl-C in the terminal of a foreground mount reaches s3vault alone, which
    // uploads what is pending and then stops the server. In the terminal's group, the server died with the same
    // key press and the unmount's uploads found no server.
    return spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  };
  let child = spawnServer(options.port ?? 0);
  const port = await waitForListening(child, options.startTimeoutMs ?? 15_000);
  let stopping = false;
  let delay = RESTART_FIRST_MS;
  let timer: NodeJS.Timeout | undefined;

  /** Keep reading the pipes (s3rver logs every request: a full pipe would block it), and watch for its end. */
  const supervise = (c: ChildProcess): void => {
    let output = '';
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-OUTPUT_TAIL);
    };
    c.stdout!.on('data', keep);
    c.stderr!.on('data', keep);
    const startedAt = Date.now();
    c.once('exit', (code, signal) => {
      if (stopping) return;
      if (Date.now() - startedAt > RESTART_RESET_MS) delay = RESTART_FIRST_MS;
      const restart = (): void => {
        timer = undefined;
        if (stopping) return;
        const next = spawnServer(port);
        waitForListening(next, options.startTimeoutMs ?? 15_000).then(
          () => {
            if (stopping) return void next.kill('SIGTERM');
            child = next;
            supervise(next);
            options.onExit?.({ code, signal, output: output.trim(), restarted: true });
          },
          () => {
            // The port taken meanwhile, or the server failing at start: try again later.
            options.onExit?.({ code, signal, output: output.trim(), restarted: false });
            delay = Math.min(delay * 2, RESTART_MAX_MS);
            timer = setTimeout(restart, delay);
            timer.unref();
          },
        );
      };
      timer = setTimeout(restart, delay);
      timer.unref();
      delay = Math.min(delay * 2, RESTART_MAX_MS);
    });
  };
  supervise(child);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get pid() {
      return child.pid!;
    },
    stop: () => {
      stopping = true;
      clearTimeout(timer);
      return stopChild(child);
    },
  };
}

/** The last lines of what a server printed (its error, without the request log before it), without colours. */
export function lastLines(output: string, n = 12): string {
  // eslint-disable-next-line no-control-regex
  return output.replace(/\x1b\[[0-9;]*m/g, '').split('\n').slice(-n).join('\n');
}

function waitForListening(child: ChildProcess, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`embedded S3 server did not start within ${timeoutMs} ms: ${output.trim().slice(-300)}`));
    }, timeoutMs);
    const onError = (c: Buffer): void => void (output += c.toString());
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const m = /listening on [\d.]+:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        child.stderr!.off('data', onError);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onError);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`embedded S3 server exited with code ${code}: ${output.trim().slice(-300)}`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
