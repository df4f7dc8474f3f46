/**
 * Shell commands against a mount, always in a child process (the serving process must never touch its own
 * mountpoint) and always with a timeout, so a hung mount fails the test instead of hanging CI.
 */
import { spawnSync } from 'node:child_process';

export interface ShResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function shResult(cmd: string, timeoutSec = 60, cwd?: string): ShResult {
  const r = spawnSync('timeout', ['-k', '5', String(timeoutSec), 'bash', '-c', cmd], { encoding: 'utf8', cwd, maxBuffer: 64 * 1024 * 1024 });
  const code = r.status ?? 128;
  if (code === 124) throw new Error(`timed out after ${timeoutSec}s (hung mount?): ${cmd}`);
  return { code, stdout: r.stdout, stderr: r.stderr };
}

/** Run and expect success; returns stdout. */
export function sh(cmd: string, timeoutSec = 60, cwd?: string): string {
  const r = shResult(cmd, timeoutSec, cwd);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}): ${cmd}\n${r.stderr}`);
  return r.stdout;
}
