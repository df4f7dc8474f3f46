/**
 * The CBFS event layer's dispatch rules (R1–R4) on a scripted backend: per-file serialization, parallel
 * non-overlapping reads, the concurrency limit, deadlines with ResetTimeout, and the Error event.
 */
import { describe, expect, it } from 'vitest';
import { checkTimeout, EventDispatcher, resetTimeout } from '../../src/fs/cbfs/dispatcher.js';
import type { CbfsHandlers } from '../../src/fs/cbfs/events.js';
import { configSchema } from '../../src/config.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A backend whose reads, writes and lookups take `ms` and record when they ran. */
function scripted(ms = 40) {
  const log: string[] = [];
  let running = 0;
  let peak = 0;
  const work = async (label: string, fn?: () => Promise<void>) => {
    running++;
    peak = Math.max(peak, running);
    log.push(`start ${label}`);
    await (fn ? fn() : sleep(ms));
    log.push(`end ${label}`);
    running--;
  };
  const fs = {
    openFile: async (p: string) => (p === '/a' ? 1 : 2),
    readFile: async (h: number, off: number, len: number) => {
      await work(`read ${h}@${off}`);
      return Buffer.alloc(len);
    },
    writeFile: async (h: number, off: number, data: Buffer) => {
      await work(`write ${h}@${off}`);
      return data.length;
    },
    getFileInfo: async (p: string) => {
      await work(`info ${p}`);
      return null;
    },
    flushFile: async (h: number) => work(`slow ${h}`, async () => {
      // A long fetch that keeps resetting its deadline while it progresses.
      for (let i = 0; i < 8; i++) {
        await sleep(600);
        resetTimeout(h === 1 ? '/a' : '/b');
      }
    }),
    cleanupFile: async (h: number) => work(`tardy ${h}`, () => sleep(5000)),
    deleteFile: async () => {
      throw new TypeError('a bug in the handler');
    },
  } as unknown as CbfsHandlers;
  return { fs, log, peak: () => peak };
}

describe('event dispatch', () => {
  it('serializes events of one file: a write waits for earlier reads, later reads wait for it', async () => {
    const { fs, log } = scripted();
    const d = new EventDispatcher(fs, { maxConcurrentEvents: 16, serializeAccess: false, timeoutMs: 0 });
    const a = await d.openFile('/a', 0);
    await Promise.all([d.readFile(a, 0, 10), d.writeFile(a, 0, Buffer.alloc(5)), d.readFile(a, 100, 10)]);
    expect(log).toEqual(['start read 1@0', 'end read 1@0', 'start write 1@0', 'end write 1@0', 'start read 1@100', 'end read 1@100']);
  });

  it('runs non-overlapping reads of one file in parallel unless SerializeAccess; overlapping ones in order', async () => {
    const { fs, log } = scripted();
    const d = new EventDispatcher(fs, { maxConcurrentEvents: 16, serializeAccess: false, timeoutMs: 0 });
    const a = await d.openFile('/a', 0);
    await Promise.all([d.readFile(a, 0, 10), d.readFile(a, 10, 10), d.readFile(a, 5, 10)]);
    expect(log.slice(0, 2)).toEqual(['start read 1@0', 'start read 1@10']);
    expect(log.indexOf('start read 1@5')).toBeGreaterThan(log.indexOf('end read 1@10'));

    const s = scripted();
    const serial = new EventDispatcher(s.fs, { maxConcurrentEvents: 16, serializeAccess: true, timeoutMs: 0 });
    const b = await serial.openFile('/a', 0);
    await Promise.all([serial.readFile(b, 0, 10), serial.readFile(b, 10, 10)]);
    expect(s.log).toEqual(['start read 1@0', 'end read 1@0', 'start read 1@10', 'end read 1@10']);
  });

  it('runs events of different files concurrently up to the limit; 1 serializes everything (SerializeEvents)', async () => {
    const many = scripted();
    const d = new EventDispatcher(many.fs, { maxConcurrentEvents: 3, serializeAccess: false, timeoutMs: 0 });
    await Promise.all(Array.from({ length: 10 }, (_, i) => d.getFileInfo(`/f${i}`)));
    expect(many.peak()).toBe(3);
    const one = scripted();
    const s = new EventDispatcher(one.fs, { maxConcurrentEvents: 1, serializeAccess: false, timeoutMs: 0 });
    await Promise.all(Array.from({ length: 5 }, (_, i) => s.getFileInfo(`/f${i}`)));
    expect(one.peak()).toBe(1);
  });

  it('deadlines: 0 or at least 3000 ms; an expired event fails with EIO; ResetTimeout keeps a progressing one alive', async () => {
    expect(() => checkTimeout(2999)).toThrow(/at least 3000 ms.*1292/);
    expect(() => checkTimeout(0)).not.toThrow();
    expect(configSchema.safeParse({ s3: { bucket: 'abc' }, fs: { eventTimeoutMs: 1000 } }).success).toBe(false);
    const { fs, log } = scripted();
    const timeouts: string[] = [];
    const d = new EventDispatcher(fs, { maxConcurrentEvents: 4, serializeAccess: false, timeoutMs: 3000, onTimeout: (op) => timeouts.push(op) });
    const a = await d.openFile('/a', 0);
    const t = Date.now();
    await expect(d.cleanupFile(a)).rejects.toMatchObject({ errno: 5 });
    expect(Date.now() - t).toBeGreaterThanOrEqual(2900);
    expect(timeouts).toEqual(['CleanupFile']);
    // 8 × 600 ms = 4.8 s > 3 s, but it resets its deadline as it goes; and it starts only once the tardy
    // handler of the same file is done (its result ignored).
    await expect(d.flushFile(a, false)).resolves.toBeUndefined();
    expect(log).toEqual(['start tardy 1', 'end tardy 1', 'start slow 1', 'end slow 1']);
  }, 20_000);

  it('an exception that is not an FsError is reported (Error event)', async () => {
    const { fs } = scripted();
    const errors: string[] = [];
    const d = new EventDispatcher(fs, { maxConcurrentEvents: 4, serializeAccess: false, timeoutMs: 0, onError: (op, p, err) => errors.push(`${op} ${p} ${(err as Error).message}`) });
    await expect(d.deleteFile('/x')).rejects.toThrow(TypeError);
    expect(errors).toEqual(['DeleteFile /x a bug in the handler']);
  });
});
