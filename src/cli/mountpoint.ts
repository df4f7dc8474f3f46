/** Checks of a mountpoint before mounting, and the registry that maps a mountpoint to its s3vault process. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { isAlive } from '../cache/lock.js';

export class MountpointError extends Error {}

export function isMounted(mountpoint: string): boolean {
  return mountType(path.resolve(mountpoint)) !== undefined;
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
    if (code === 'ENOTCONN' && clearDeadMount(mp)) return checkMountpoint(mp, create);
    if (code === 'ENOTCONN') throw new MountpointError(`mountpoint ${mp} is a dead FUSE mount (Transport endpoint is not connected): clean it with "fusermount3 -uz ${mp}" and retry`);
    if (code === 'ENOENT' && create) mkdirSync(mp, { recursive: true });
    else if (code === 'ENOENT') throw new MountpointError(`mountpoint ${mp} does not exist (create it with "mkdir -p ${mp}")`);
    else throw new MountpointError(`cannot use mountpoint ${mp}: ${(err as Error).message}`);
  }
  if (isMounted(mp)) throw new MountpointError(`mountpoint ${mp} is already mounted (unmount it with "s3vault unmount ${mp}")`);
  if (readdirSync(mp).length > 0) throw new MountpointError(`mountpoint ${mp} is not empty`);
  return mp;
}

/** The filesystem type mounted at a path (/proc/self/mounts; its last mount there), if any. */
function mountType(mp: string): string | undefined {
  let type: string | undefined;
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[1]?.replace(/\\040/g, ' ') === mp) type = f[2];
  }
  return type;
}

/**
 * The dead mount an s3vault killed with -9 left behind (its process gone, the kernel answers ENOTCONN): detached,
 * so that mounting again on the same mountpoint — what brings the vault's unsent changes to S3 — needs no
 * `fusermount3 -uz` first. Only an s3vault mount whose registered process is gone; any other is left to the user.
 */
function clearDeadMount(mp: string): boolean {
  if (mountType(mp) !== 'fuse.s3vault' || mountOwner(mp) !== undefined) return false;
  const r = spawnSync('fusermount3', ['-uz', mp], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0 && !isMounted(mp);
}

/**
 * The registry: `<id>.pid` names the process serving a mountpoint, and its control socket is `<id>.<pid>.sock`.
 * The socket is named for its process because a daemon whose mount was taken away from outside (fusermount3 -u)
 * goes on uploading, and a new mount may meanwhile start on the same mountpoint: when the old one ends, it removes
 * only its own socket (libuv unlinks a listening socket's path as it closes), and the pid file only if it is still
 * its own.
 */
const registryDir = (): string => path.join(os.tmpdir(), 's3vault-mounts');
const registryId = (mountpoint: string): string => createHash('sha1').update(path.resolve(mountpoint)).digest('hex').slice(0, 16);
const pidFile = (mountpoint: string): string => path.join(registryDir(), `${registryId(mountpoint)}.pid`);
const socketFile = (mountpoint: string, pid: number): string => path.join(registryDir(), `${registryId(mountpoint)}.${pid}.sock`);

function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Entries of processes that are gone (killed with -9, or a crash): their pid files and sockets. */
function pruneRegistry(): void {
  let names: string[];
  try {
    names = readdirSync(registryDir());
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^([0-9a-f]{16})(?:\.(\d+))?\.(pid|sock|tmp)$/.exec(name);
    if (!m) continue;
    const file = path.join(registryDir(), name);
    // A socket (or a pid file being written) named for its pid; a pid file, and a socket of the unnamed form earlier
    // versions made, by the pid file.
    const pid = m[2] ? Number(m[2]) : readPid(path.join(registryDir(), `${m[1]}.pid`));
    if (pid === undefined || !isAlive(pid)) rmSync(file, { force: true });
  }
}

/** Record which process serves a mountpoint; returns the path of its control socket. */
export function registerMount(mountpoint: string, pid: number): string {
  mkdirSync(registryDir(), { recursive: true });
  pruneRegistry();
  // Written whole, then renamed into place: a reader never sees half a pid.
  const tmp = path.join(registryDir(), `${registryId(mountpoint)}.${pid}.tmp`);
  writeFileSync(tmp, String(pid));
  renameSync(tmp, pidFile(mountpoint));
  return socketFile(mountpoint, pid);
}

/** Remove this process's entry: its socket, and the pid file unless another process has registered since. */
export function unregisterMount(mountpoint: string, pid: number): void {
  rmSync(socketFile(mountpoint, pid), { force: true });
  if (readPid(pidFile(mountpoint)) === pid) rmSync(pidFile(mountpoint), { force: true });
}

/** The control socket of the process serving a mountpoint (a path that does not exist if none is registered). */
export function controlSocket(mountpoint: string): string {
  const named = socketFile(mountpoint, readPid(pidFile(mountpoint)) ?? 0);
  // A daemon of an earlier version (still running across an upgrade) listens on `<id>.sock`.
  const legacy = path.join(registryDir(), `${registryId(mountpoint)}.sock`);
  return !existsSync(named) && existsSync(legacy) ? legacy : named;
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
  const pid = readPid(pidFile(mountpoint));
  return pid !== undefined && isAlive(pid) ? pid : undefined;
}

/**
 * The processes using a mount, as fuser -m would name them: "name (pid N)" for each with its working directory,
 * root or an open file under it. Read from /proc's links, which never reach the mount itself.
 */
export function mountUsers(mountpoint: string): string[] {
  const mp = path.resolve(mountpoint);
  const inside = (p: string): boolean => p === mp || p.startsWith(`${mp}/`);
  const link = (p: string): string => {
    try {
      return readlinkSync(p);
    } catch {
      return '';
    }
  };
  const users: string[] = [];
  // Not this process: it ends when it has answered (a shell in the mount that runs it is named).
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)) {
    let uses = inside(link(`/proc/${pid}/cwd`)) || inside(link(`/proc/${pid}/root`));
    if (!uses) {
      try {
        uses = readdirSync(`/proc/${pid}/fd`).some((fd) => inside(link(`/proc/${pid}/fd/${fd}`)));
      } catch {
        // gone, or not ours to read
      }
    }
    if (!uses) continue;
    let name = '?';
    try {
      name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      // gone meanwhile
    }
    users.push(`${name} (pid ${pid})`);
  }
  return users;
}
