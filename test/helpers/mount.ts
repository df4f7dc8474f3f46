/**
 * A real s3vault mount for integration tests: the built CLI (`bin/s3vault.js mount … --foreground`) in a
 * child process against a test server. `stop()` unmounts through the CLI path (SIGTERM: flush, unmount)
 * and falls back to `fusermount3 -uz`, so no test leaves a mount behind, even when it fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { scratchDir } from './scratch.js';

export const BIN = fileURLToPath(new URL('../../bin/s3vault.js', import.meta.url));

export interface TestMount {
  mountpoint: string;
  vault: string;
  child: ChildProcess;
  output(): string;
  /** SIGTERM (flush + unmount) and wait; returns the exit code. The vault stays (tests reopen it); the mountpoint goes. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface MountOptions {
  endpoint: string;
  bucket: string;
  mountpoint?: string;
  vault?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** Options for node itself (e.g. --cpu-prof, which NODE_OPTIONS does not take). */
  nodeArgs?: string[];
}

export function cliEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', HOME: process.env.HOME, ...extra };
}

export function isMounted(mp: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mp);
}

export function forceUnmount(mp: string): void {
  if (isMounted(mp)) spawnSync('fusermount3', ['-uz', mp]);
}

export async function mount(options: MountOptions): Promise<TestMount> {
  // The vault outlives stop() (tests reopen it) and goes with the test file's scratch directories.
  const base = scratchDir('test');
  const mountpoint = options.mountpoint ?? path.join(base, 'mnt');
  const vault = options.vault ?? path.join(base, 'vault');
  try {
    mkdirSync(mountpoint, { recursive: true });
  } catch (err) {
    // A dead mount left by a killed s3vault: s3vault itself clears it (what a test of that checks).
    if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') throw err;
  }
  const args = [...(options.nodeArgs ?? []), BIN, 'mount', options.bucket, mountpoint, '--endpoint', options.endpoint, '--vault', vault, '--foreground', ...(options.extraArgs ?? [])];
  const child = spawn(process.execPath, args, { env: cliEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + 20_000;
  while (!isMounted(mountpoint) || !out.includes('mounted')) {
    if (child.exitCode !== null) throw new Error(`s3vault exited (${child.exitCode}) before mounting:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      forceUnmount(mountpoint);
      throw new Error(`s3vault did not mount within 20 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    forceUnmount(mountpoint);
    if (!options.mountpoint && existsSync(mountpoint)) rmSync(mountpoint, { recursive: true, force: true });
    return child.exitCode;
  };
  return { mountpoint, vault, child, output: () => out, stop };
}
