/**
 * The small C programs some tests run against a mount (test/helpers/*.c), built with gcc (installed by
 * scripts/install.sh --test) into a scratch directory. Returns the program's path.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { scratchDir } from './scratch.js';

export function buildCHelper(name: string): string {
  const src = fileURLToPath(new URL(`./${name}.c`, import.meta.url));
  const out = path.join(scratchDir(name), name);
  const cc = spawnSync('gcc', ['-O2', '-Wall', '-o', out, src], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cannot build the ${name} helper (gcc is installed by scripts/install.sh --test): ${cc.stderr}`);
  return out;
}
