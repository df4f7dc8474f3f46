/**
 * Global setup: the scratch directories the tests make under the temp directory (`s3vault-*`: vaults, mountpoints,
 * servers' data, reference trees) are removed when the run ends — never one that is still a mountpoint.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const scratch = () => new Set(readdirSync(os.tmpdir()).filter((n) => n.startsWith('s3vault-')));

export default function setup(): () => void {
  const before = scratch();
  return () => {
    const mounted = readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '');
    for (const name of scratch()) {
      if (before.has(name)) continue;
      const dir = path.join(os.tmpdir(), name);
      if (mounted.some((mp) => mp === dir || mp.startsWith(`${dir}/`))) continue;
      rmSync(dir, { recursive: true, force: true });
    }
  };
}
