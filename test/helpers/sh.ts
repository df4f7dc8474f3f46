/**
 * Shell commands against a mount, always in a child process (the serving process must never touch its own
 * mountpoint) and always with a timeout, so a hung mount fails the test instead of hanging CI.
 */
import { spawn, spawnSync } from 'node:child_process';

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
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}): ${cmd}\n${r.stdout.slice(-4000)}${r.stderr}`);
  return r.stdout;
}

/**
 * The same, without blocking this process: for tests that serve something in-process (the fault proxy)
 * that the command's mount depends on — a synchronous wait would deadlock them.
 */
export function shAsync(cmd: string, timeoutSec = 60, cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('timeout', ['-k', '5', String(timeoutSec), 'bash', '-c', cmd], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => {
      if (code === 124) reject(new Error(`timed out after ${timeoutSec}s (hung mount?): ${cmd}`));
      else if (code !== 0) reject(new Error(`command failed (exit ${code}): ${cmd}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}
