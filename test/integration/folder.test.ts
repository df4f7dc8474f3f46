/**
 * The second backend: a local folder mounted through the same CBFS event layer and FUSE adapter
 * (`s3vault mount-folder`), used with ordinary tools; every change shows in the folder itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, forceUnmount, isMounted } from '../helpers/mount.js';
import { sh, shResult } from '../helpers/sh.js';
import { scratchDir } from '../helpers/scratch.js';

let child: ChildProcess;
let folder: string;
let mp: string;

beforeAll(async () => {
  const base = scratchDir('folder');
  folder = path.join(base, 'folder');
  mp = path.join(base, 'mnt');
  mkdirSync(folder);
  mkdirSync(mp);
  sh(`echo existing > ${folder}/existing.txt`);
  child = spawn(process.execPath, [BIN, 'mount-folder', folder, mp], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  while (!isMounted(mp)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error('mount-folder did not mount');
    await new Promise((r) => setTimeout(r, 50));
  }
});

afterAll(async () => {
  if (mp) forceUnmount(mp);
  child?.kill('SIGKILL');
});

describe('folder backend (event handlers only)', () => {
  it('shows the folder and carries changes made with shell tools into it', () => {
    expect(sh(`cat ${mp}/existing.txt`)).toBe('existing\n');
    sh(`mkdir ${mp}/d && dd if=/dev/urandom of=${mp}/d/blob bs=64k count=20 status=none && cp ${mp}/d/blob ${mp}/copy`);
    sh(`cmp ${mp}/d/blob ${folder}/copy && mv ${mp}/d ${mp}/e && ln -s existing.txt ${mp}/link && chmod 600 ${mp}/copy`);
    expect(readFileSync(path.join(folder, 'e', 'blob')).length).toBe(20 * 65536);
    expect(readlinkSync(path.join(folder, 'link'))).toBe('existing.txt');
    expect(sh(`stat -c %a ${folder}/copy`).trim()).toBe('600');
    sh(`rm ${mp}/copy`);
    expect(shResult(`test -e ${folder}/copy`).code).toBe(1);
    expect(shResult(`rmdir ${mp}/e`).stderr).toMatch(/not empty/);
  });
});
