/** One process per vault: a lock file holding the owner's pid; a stale one (dead pid) is taken over. */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { VaultError } from './errors.js';

export function takeLock(dir: string): string {
  const file = path.join(dir, 'vault.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new VaultError('IO', `cannot lock vault ${dir}: ${(err as Error).message}`, { cause: err });
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (pid && isAlive(pid)) throw new VaultError('IN_USE', `vault ${dir} is in use by s3vault process ${pid}`);
      unlinkSync(file);
    }
  }
  throw new VaultError('IN_USE', `cannot lock vault ${dir}`);
}

/** Whether a process runs (one of another user's counts: EPERM). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
