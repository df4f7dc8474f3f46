/** Checks of a mountpoint before mounting, and the registry that maps a mountpoint to its s3vault process. */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';

export class MountpointError extends Error {}

export function isMounted(mountpoint: string): boolean {
  const target = path.resolve(mountpoint);
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  return mounts.split('\n').some((line) => line.split(' ')[1]?.replace(/\\040/g, ' ') === target);
}

/** The directory must exist, be a directory, be empty and not be a (dead) mount (CBFS R37). */
export function checkMountpoint(mountpoint: string, create = false): string {
  const mp = path.resolve(mountpoint);
  try {
    const st = statSync(mp);
    if (!st.isDirectory()) throw new MountpointError(`mountpoint ${mp} is not a directory`);
  } catch (err) {
    if (err instanceof MountpointError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN') throw new MountpointError(`mountpoint ${mp} is a dead FUSE mount (Transport endpoint is not connected): clean it with "fusermount3 -uz ${mp}" and retry`);
    if (code === 'ENOENT' && create) mkdirSync(mp, { recursive: true });
    else if (code === 'ENOENT') throw new MountpointError(`mountpoint ${mp} does not exist (create it with "mkdir -p ${mp}")`);
    else throw new MountpointError(`cannot use mountpoint ${mp}: ${(err as Error).message}`);
  }
  if (isMounted(mp)) throw new MountpointError(`mountpoint ${mp} is already mounted (unmount it with "s3vault unmount ${mp}")`);
  if (readdirSync(mp).length > 0) throw new MountpointError(`mountpoint ${mp} is not empty`);
  return mp;
}

function registryFile(mountpoint: string, ext: 'pid' | 'sock'): string {
  const id = createHash('sha1').update(path.resolve(mountpoint)).digest('hex').slice(0, 16);
  return path.join(os.tmpdir(), 's3vault-mounts', `${id}.${ext}`);
}

/** Record which process serves a mountpoint; returns the path of its control socket. */
export function registerMount(mountpoint: string, pid: number): string {
  const file = registryFile(mountpoint, 'pid');
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, String(pid));
  return registryFile(mountpoint, 'sock');
}

export function unregisterMount(mountpoint: string): void {
  rmSync(registryFile(mountpoint, 'pid'), { force: true });
  rmSync(registryFile(mountpoint, 'sock'), { force: true });
}

export function controlSocket(mountpoint: string): string {
  return registryFile(mountpoint, 'sock');
}

/** The s3vault mount a path lies in, and the path inside it ("/…"). */
export function findMount(target: string): { mountpoint: string; inner: string } | undefined {
  const abs = path.resolve(target);
  let best: string | undefined;
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mp, type] = line.split(' ');
    if (type !== 'fuse.s3vault' || !mp) continue;
    const m = mp.replace(/\\040/g, ' ');
    if ((abs === m || abs.startsWith(`${m}/`)) && (!best || m.length > best.length)) best = m;
  }
  return best === undefined ? undefined : { mountpoint: best, inner: abs.slice(best.length) || '/' };
}

export function mountOwner(mountpoint: string): number | undefined {
  try {
    const pid = Number(readFileSync(registryFile(mountpoint, 'pid'), 'utf8'));
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}
