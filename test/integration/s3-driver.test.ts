/** The S3 driver against a real S3-compatible server (s3rver on loopback): every call and its RWRESULT. */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3ConfigSchema } from '../../src/storage/config.js';
import { EMBEDDED_CREDENTIALS } from '../../src/storage/embedded-server.js';
import { RWRESULT } from '../../src/storage/rwresult.js';
import { S3Storage } from '../../src/storage/s3.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';

let s3: TestServer;
let drv: S3Storage;
const MiB = 1024 * 1024;

function driver(bucket: string, extra: Record<string, unknown> = {}): S3Storage {
  return new S3Storage(s3ConfigSchema.parse({ bucket, endpoint: s3.endpoint, credentials: EMBEDDED_CREDENTIALS, ...extra }));
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket('drv');
  drv = driver('drv', { prefix: 'pre/fix' });
});
afterAll(async () => {
  await drv?.close();
  await s3?.stop();
});

describe('S3 driver on s3rver', () => {
  it('probe succeeds on an existing bucket and fails PERMANENT on a missing one', async () => {
    await drv.probe();
    const missing = driver('not-there');
    await expect(missing.probe()).rejects.toMatchObject({ result: RWRESULT.PERMANENT_FAILURE, detail: 'the bucket does not exist' });
    await missing.close();
  });

  it('a refused connection is a transient FAILURE', async () => {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const d = new S3Storage(s3ConfigSchema.parse({ bucket: 'drv', endpoint: `http://127.0.0.1:${port}`, credentials: EMBEDDED_CREDENTIALS, maxAttempts: 1 }));
    await expect(d.head('x')).rejects.toMatchObject({ result: RWRESULT.FAILURE });
    await d.close();
  });

  it('a server that stops answering (or reading an upload) fails the request once it is idle requestTimeoutMs', async () => {
    // Accepts connections and never reads or answers: the kernel buffers fill and the upload stalls.
    const held: net.Socket[] = [];
    const srv = net.createServer((sock) => {
      sock.pause();
      held.push(sock);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as net.AddressInfo).port;
    const d = new S3Storage(s3ConfigSchema.parse({ bucket: 'drv', endpoint: `http://127.0.0.1:${port}`, credentials: EMBEDDED_CREDENTIALS, maxAttempts: 1, requestTimeoutMs: 1000 }));
    try {
      const started = Date.now();
      const body = randomBytes(8 * MiB); // more than the socket buffers take: the write itself stalls
      await expect(d.write('stalled.bin', body.length, async () => body)).rejects.toMatchObject({ result: RWRESULT.FAILURE });
      await expect(d.head('x')).rejects.toMatchObject({ result: RWRESULT.FAILURE });
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      for (const sock of held) sock.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
      await d.close();
    }
  });

  it('a multipart upload whose parts fail rejects its write (no unhandled rejection ends the process)', async () => {
    const proxy = await startFaultProxy(s3.server.port);
    const d = new S3Storage(s3ConfigSchema.parse({ bucket: 'drv', endpoint: proxy.endpoint, credentials: EMBEDDED_CREDENTIALS, maxAttempts: 1 }));
    try {
      const data = randomBytes(21 * MiB);
      let first = true;
      const write = d.write('failing.bin', data.length, async (o, l) => {
        // CreateMultipartUpload went through; from now on the server answers 500.
        if (first) proxy.setMode('error500');
        first = false;
        return data.subarray(o, o + l);
      });
      await expect(write).rejects.toMatchObject({ result: RWRESULT.FAILURE });
      // Give a stray rejection the time to surface (vitest fails the run on one).
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await d.close();
      await proxy.close();
    }
  });

  it('writes under the prefix, reads ranges, and reports short reads and reads past EOF', async () => {
    const data = randomBytes(1000);
    const w = await drv.write('a/b.bin', data.length, async (o, l) => data.subarray(o, o + l), { meta: { mode: '33188' } });
    expect(w.result).toBe(RWRESULT.SUCCESS);
    expect((await s3.get('drv', 'pre/fix/a/b.bin')).equals(data)).toBe(true);
    const r = await drv.read('a/b.bin', 100, 100);
    expect(r.result).toBe(RWRESULT.SUCCESS);
    expect(r.data.equals(data.subarray(100, 200))).toBe(true);
    const short = await drv.read('a/b.bin', 900, 200);
    expect(short.result).toBe(RWRESULT.PARTIAL);
    expect(short.data.equals(data.subarray(900))).toBe(true);
    const beyond = await drv.read('a/b.bin', 5000, 10);
    expect(beyond.result).toBe(RWRESULT.RANGE_BEYOND_EOF);
    expect(beyond.data.length).toBe(0);
    const head = await drv.head('a/b.bin');
    expect(head).toMatchObject({ key: 'a/b.bin', size: 1000, etag: w.etag, meta: { mode: '33188' } });
    expect(await drv.head('a/none')).toBeNull();
  });

  it('a read with a stale ETag is FILE_MODIFIED_EXTERNALLY, a missing key FILE_FAILURE', async () => {
    await drv.write('v.txt', 3, async () => Buffer.from('one'));
    await expect(drv.read('v.txt', 0, 3, 'not-the-etag')).rejects.toMatchObject({ result: RWRESULT.FILE_MODIFIED_EXTERNALLY });
    await expect(drv.read('gone.txt', 0, 3)).rejects.toMatchObject({ result: RWRESULT.FILE_FAILURE });
  });

  it('uploads large objects as parallel multipart, reading each part on demand', async () => {
    const data = randomBytes(21 * MiB);
    const asked: number[] = [];
    const w = await drv.write('big.bin', data.length, async (o, l) => {
      asked.push(l);
      return data.subarray(o, o + l);
    });
    expect(w.result).toBe(RWRESULT.SUCCESS);
    expect(asked.length).toBe(3); // 8 + 8 + 5 MiB
    expect(Math.max(...asked)).toBe(8 * MiB);
    expect((await s3.get('drv', 'pre/fix/big.bin')).equals(data)).toBe(true);
  });

  it('several multipart uploads at once read into shared part buffers without mixing their bytes', async () => {
    const files = Array.from({ length: 4 }, () => randomBytes(21 * MiB + 123));
    const given = new Set<Buffer>();
    await Promise.all(
      files.map((data, n) =>
        drv.write(`shared-${n}.bin`, data.length, async (o, l, into) => {
          expect(into!.length).toBeGreaterThanOrEqual(l);
          given.add(into!);
          await new Promise((r) => setTimeout(r, 1 + (n % 3))); // interleave the readers
          data.copy(into!, 0, o, o + l);
          return into!.subarray(0, l);
        }),
      ),
    );
    for (const [n, data] of files.entries()) expect((await s3.get('drv', `pre/fix/shared-${n}.bin`)).equals(data), `shared-${n}.bin`).toBe(true);
    expect(given.size).toBeLessThanOrEqual(8); // 2 x uploadConcurrency (4), however many uploads run
  });

  it('lists with a delimiter across pages, copies with and without new metadata, deletes', async () => {
    const keys = Array.from({ length: 1205 }, (_, i) => `many/k${String(i).padStart(5, '0')}`);
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => drv.write(k, 1, async () => Buffer.from('x'))));
    await drv.write('many/sub/inner', 1, async () => Buffer.from('y'));
    const pages: { objects: string[]; prefixes: string[] }[] = [];
    const listing = await drv.list('many/', { delimiter: '/', onPage: (p) => pages.push({ objects: p.objects.map((o) => o.key), prefixes: p.prefixes }) });
    expect(listing.objects.map((o) => o.key)).toEqual(keys);
    expect(listing.prefixes).toEqual(['many/sub/']);
    // Each page as it came (look-ups waiting on a listing are answered from the pages so far): together, the listing.
    expect(pages.length).toBe(2);
    expect(pages.flatMap((p) => p.objects)).toEqual(keys);
    expect(pages.flatMap((p) => p.prefixes)).toEqual(['many/sub/']);
    // A caller may pause between pages, and stop: then the listing is the pages so far, marked stopped.
    let asked = 0;
    const paused = await drv.list('many/', { delimiter: '/', onPage: async () => {
        asked++;
        await new Promise((r) => setTimeout(r, 50));
        return true;
      },
    });
    expect(asked).toBe(2);
    expect(paused.objects.length).toBe(1205);
    expect(paused.stopped).toBeUndefined();
    // The last page's pause is not waited for: nothing is left to ask for (a pause that never ends, here).
    let seen = 0;
    const whole = await Promise.race([
      drv.list('many/', { delimiter: '/', onPage: () => (++seen === 2 ? new Promise<boolean>(() => {}) : true) }),
      new Promise<'waited'>((r) => setTimeout(() => r('waited'), 5000)),
    ]);
    expect(seen).toBe(2);
    expect(whole === 'waited' ? whole : whole.objects.length).toBe(1205);
    const stopped = await drv.list('many/', { delimiter: '/', onPage: async () => false });
    expect(stopped.stopped).toBe(true);
    expect(stopped.objects.map((o) => o.key)).toEqual(keys.slice(0, 1000));
    expect((await drv.list('many/', { delimiter: '/', maxKeys: 3 })).objects).toHaveLength(3);
    await drv.copy('many/sub/inner', 'copied');
    await drv.copy('copied', 'copied', { mode: '33261' });
    expect((await drv.head('copied'))?.meta).toEqual({ mode: '33261' });
    await drv.deleteMany([...keys, 'many/sub/inner']);
    expect((await drv.list('many/')).objects).toHaveLength(0);
    await drv.delete('copied');
    expect(await drv.head('copied')).toBeNull();
  });
});
