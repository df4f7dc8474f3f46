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
  pid: number;
  stop(): Promise<void>;
}

export interface EmbeddedServerOptions {
  dataDir: string;
  /** Buckets created at start (s3rver --configure-bucket). */
  buckets?: string[];
  /** 0 (default): any free port. */
  port?: number;
  startTimeoutMs?: number;
}

/** The credentials s3rver accepts (it does not check signatures). */
export const EMBEDDED_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

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

export async function startEmbeddedServer(options: EmbeddedServerOptions): Promise<EmbeddedServer> {
  mkdirSync(options.dataDir, { recursive: true });
  const args = ['--openssl-legacy-provider', '--import', EXIT_WITH_PARENT, s3rverBin(), '-d', options.dataDir, '-a', '127.0.0.1', '-p', String(options.port ?? 0), '--no-vhost-buckets'];
  for (const b of options.buckets ?? []) args.push('--configure-bucket', b);
  // --openssl-legacy-provider: s3rver's continuation tokens use DES (spec/test-servers.md).
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const port = await waitForListening(child, options.startTimeoutMs ?? 15_000);
  // After start-up s3rver logs every request: keep reading so its pipe never fills and blocks it.
  child.stdout!.resume();
  child.stderr!.resume();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    stop: () => stopChild(child),
  };
}

function waitForListening(child: ChildProcess, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`embedded S3 server did not start within ${timeoutMs} ms: ${output.trim().slice(-300)}`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const m = /listening on [\d.]+:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
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
