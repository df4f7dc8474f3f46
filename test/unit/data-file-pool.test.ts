/** Spare data files made ahead for the next record ids: used when the guess is right, never a record's file removed. */
import { existsSync, fstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataFilePool } from '../../src/cache/data-file-pool.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-pool-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Until the spares under way are made (each is one open on the thread pool). */
const settle = () => new Promise((resolve) => setTimeout(resolve, 50));
const names = () => readdirSync(dir).map(Number).sort((a, b) => a - b);

describe('data file pool', () => {
  it('the first record makes spares for the ids after it; the next record takes its own, an empty file at its path', async () => {
    const owned = new Set<number>();
    const pool = new DataFilePool(dir, (id) => owned.has(id));
    expect(pool.take(5)).toBeUndefined(); // nothing made yet: the usual open
    owned.add(5);
    writeFileSync(path.join(dir, '5'), ''); // what the usual open made
    await settle();
    expect(names()).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13]);
    const fd = pool.take(6);
    owned.add(6);
    expect(fd).toBeDefined();
    expect(fstatSync(fd!).size).toBe(0);
    writeSync(fd!, 'six');
    expect(readFileSync(path.join(dir, '6'), 'utf8')).toBe('six'); // the descriptor is the file at the id's path
    await settle();
    expect(names()).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    await pool.stop();
    // The unused spares go; the records' files stay, with their bytes.
    expect(names()).toEqual([5, 6]);
    expect(readFileSync(path.join(dir, '6'), 'utf8')).toBe('six');
  });

  it('a guess that misses (a lower id, after the largest record went) takes the usual open and keeps the spares above', async () => {
    const owned = new Set<number>([1]);
    const pool = new DataFilePool(dir, (id) => owned.has(id));
    pool.take(1);
    await settle();
    expect(pool.take(2)).toBeDefined();
    owned.add(2);
    owned.delete(2); // removed again: SQLite gives its id to the next record
    rmSync(path.join(dir, '2'));
    expect(pool.take(2)).toBeUndefined();
    await settle();
    expect(pool.take(3)).toBeDefined();
    await pool.stop();
  });

  it('never uses or removes a file it did not make: one left under a future id by a crash stays as it was', async () => {
    writeFileSync(path.join(dir, '3'), 'left by a crash');
    const pool = new DataFilePool(dir, () => false);
    pool.take(1);
    await settle();
    expect(pool.take(3)).toBeUndefined(); // not a spare: the usual open (O_TRUNC) deals with it
    await pool.stop();
    expect(readFileSync(path.join(dir, '3'), 'utf8')).toBe('left by a crash');
  });

  it('a record that takes an id while its spare is still being made keeps the file; the spare is not handed out', async () => {
    const owned = new Set<number>();
    const pool = new DataFilePool(dir, (id) => owned.has(id));
    pool.take(1);
    // At once, before the spares are made: id 2 is being made.
    expect(pool.take(2)).toBeUndefined();
    owned.add(2);
    writeFileSync(path.join(dir, '2'), 'record two'); // the usual open and a write
    await settle();
    expect(pool.take(2)).toBeUndefined();
    await pool.stop();
    expect(readFileSync(path.join(dir, '2'), 'utf8')).toBe('record two');
  });

  it('at stop, a spare whose id a record took meanwhile (made while the vault closed) is left to it', async () => {
    const owned = new Set<number>();
    const pool = new DataFilePool(dir, (id) => owned.has(id));
    pool.take(1);
    await settle();
    owned.add(2); // a record got id 2 by the usual open, after the pool had stopped handing out
    const stopping = pool.stop();
    expect(pool.take(2)).toBeUndefined();
    await stopping;
    expect(existsSync(path.join(dir, '2'))).toBe(true);
    expect(existsSync(path.join(dir, '3'))).toBe(false);
  });
});
