/** The vault's data file handle: create-or-truncate semantics kept by the no-truncate fast path of open. */
import { constants as fsc, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataFile } from '../../src/cache/data-file.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-df-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const CREATE = fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC;

describe('data file', () => {
  it('O_CREAT | O_TRUNC makes a new file, and empties one a crash left under the same name', async () => {
    const fresh = path.join(dir, '1');
    const f = DataFile.open(fresh, CREATE, 0o600);
    await f.write(Buffer.from('new'), 0, 3, 0);
    await f.close(3);
    expect(readFileSync(fresh, 'utf8')).toBe('new');

    const left = path.join(dir, '2');
    writeFileSync(left, 'what a crash left behind');
    const g = DataFile.open(left, CREATE, 0o600);
    await g.write(Buffer.from('ok'), 0, 2, 0);
    await g.close(2);
    expect(readFileSync(left, 'utf8')).toBe('ok');
  });

  it('a file emptied since it was opened and then rewritten large closes on the thread pool, its bytes kept', async () => {
    const file = path.join(dir, '3');
    writeFileSync(file, 'old');
    const f = DataFile.open(file, fsc.O_RDWR, 0o600);
    await f.truncate(0);
    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    await f.write(big, 0, big.length, 0);
    await f.close(big.length);
    expect(readFileSync(file).equals(big)).toBe(true);
  });
});
