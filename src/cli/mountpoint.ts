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

function registryFile(mountpoint: string): string {
  const id = createHash('sha1').update(path.resolve(mountpoint)).digest('hex').slice(0, 16);
  return path.join(os.tmpdir(), 's3vault-mounts', `${id}.pid`);
}

export function registerMount(mountpoint: string, pid: number): void {
  const file = registryFile(mountpoint);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, String(pid));
}

export function unregisterMount(mountpoint: string): void {
  rmSync(registryFile(mountpoint), { force: true });
}

export function mountOwner(mountpoint: string): number | undefined {
  try {
    const pid = Number(readFileSync(registryFile(mountpoint), 'utf8'));
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}
