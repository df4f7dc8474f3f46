/**
 * Temporary directories that live as long as one test file: `scratchDir` makes one, and the setup file
 * (`scratch-setup.ts`) removes them all after the file's own teardown — a test run leaves nothing in /tmp.
 * A mount still live under one (a test that failed before its teardown) is detached first, so removing the
 * directory never deletes through a mount.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const dirs: string[] = [];

export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `s3vault-${prefix}-`));
  dirs.push(dir);
  return dir;
}

export function removeScratchDirs(): void {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '');
  for (const dir of dirs.splice(0)) {
    for (const mp of mounts.filter((m) => m.startsWith(dir + '/')).reverse()) spawnSync('fusermount3', ['-uz', mp]);
    rmSync(dir, { recursive: true, force: true });
  }
}
