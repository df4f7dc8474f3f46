/** Part buffers: reused, never more than the cap, a waiter served by the next release. */
import { describe, expect, it } from 'vitest';
import { PartBuffers } from '../../src/storage/part-buffers.js';

describe('part buffers', () => {
  it('hands out at most `max` buffers, reuses released ones, and serves waiters in order', async () => {
    const pool = new PartBuffers(1024, 2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    expect(a.length).toBe(1024);
    expect(a).not.toBe(b);
    const served: Buffer[] = [];
    const third = pool.acquire().then((buf) => served.push(buf));
    const fourth = pool.acquire().then((buf) => served.push(buf));
    await new Promise((r) => setTimeout(r, 10));
    expect(served).toHaveLength(0); // both wait: the cap is reached
    pool.release(b);
    await third;
    expect(served).toEqual([b]);
    pool.release(a);
    await fourth;
    expect(served).toEqual([b, a]);
    pool.release(b);
    expect(await pool.acquire()).toBe(b); // an idle buffer comes back before any new one is made
    expect(pool.allocated).toBe(2);
  });
});
