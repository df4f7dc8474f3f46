/**
 * Requests without the SDK's middleware (src/storage/direct.ts: HEAD by node:http, ranged GET into a file by
 * libcurl) against a server that checks signatures (Ceph RGW, which s3rver is not): they must be answered by the
 * direct path itself — a signing mistake would be refused (403) and quietly handed to the SDK — and give exactly
 * what the SDK gives, odd keys included. On s3rver too, which ignores If-Match: a GET of another version is refused.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAndRepair } from '../../src/cache/check.js';
import { Vault } from '../../src/cache/vault.js';
import { EMBEDDED_CREDENTIALS } from '../../src/storage/embedded-server.js';
import { startRgwServer, type RgwServer } from '../../src/storage/rgw-server.js';
import { s3ConfigSchema } from '../../src/storage/config.js';
import { StorageError } from '../../src/storage/rwresult.js';
import { DirectRequests } from '../../src/storage/direct.js';
import { S3Storage } from '../../src/storage/s3.js';
import { scratchDir } from '../helpers/scratch.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';

const BUCKET = 'quick';
const MiB = 1024 * 1024;
const BIG = randomBytes(3 * MiB + 1234);
const KEYS = ['plain.txt', 'dir with space/ü-é+%&=;,@$[]~.txt', "sub/!'()*#?.bin", 'a/b/c/deep'];

let rgw: RgwServer;
let s3rver: TestServer;
let client: S3Client;
let bigEtag: string;
const drivers: S3Storage[] = [];

function driver(secret = rgw.secretAccessKey, prefix?: string): S3Storage {
  const d = new S3Storage(s3ConfigSchema.parse({ bucket: BUCKET, endpoint: rgw.endpoint, prefix, maxAttempts: 1, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: secret } }));
  drivers.push(d);
  return d;
}

beforeAll(async () => {
  rgw = await startRgwServer();
  client = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' });
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
  for (const [i, key] of KEYS.entries()) {
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: 'x'.repeat(i * 7 + 1), ContentType: i % 2 ? 'application/x-thing' : undefined, Metadata: { mode: String(0o100600 + i), mtime: `${1700000000 + i}.5`, note: `key ${i}` } }));
  }
  bigEtag = (await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'big/ü +.bin', Body: BIG }))).ETag!.replace(/"/g, '');
  s3rver = await startTestServer();
  await s3rver.createBucket(BUCKET);
  await s3rver.put(BUCKET, 'big/ü +.bin', BIG);
}, 180_000);

/** A file of `size` bytes of 0xee, open for reading and writing. */
function dataFile(size: number): { fd: number; file: string } {
  const file = path.join(scratchDir('direct'), 'data');
  const fd = openSync(file, 'w+');
  writeSync(fd, Buffer.alloc(size, 0xee), 0, size, 0);
  return { fd, file };
}

afterAll(async () => {
  for (const d of drivers) await d.close();
  client?.destroy();
  await rgw?.stop();
  await s3rver?.stop();
});

describe('HEAD without the SDK middleware, on a server that checks signatures', () => {
  it('answers every key itself, with what the SDK answers; a missing key is null', async () => {
    const drv = driver();
    for (const key of KEYS) {
      const sdk = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
      const quick = await drv.head(key);
      expect(quick, key).toEqual({ key, size: sdk.ContentLength, etag: sdk.ETag!.replace(/"/g, ''), lastModified: sdk.LastModified, meta: sdk.Metadata, contentType: sdk.ContentType });
    }
    expect(await drv.head('no/such key')).toBeNull();
    expect({ answered: drv.direct.counts.head, handedOver: drv.direct.counts.headHandedOver }).toEqual({ answered: KEYS.length + 1, handedOver: 0 });
  });

  it('under a prefix too', async () => {
    const drv = driver(undefined, 'a/b');
    expect(await drv.head('c/deep')).toMatchObject({ key: 'c/deep', size: 22, meta: { note: 'key 3' } });
    expect(drv.direct.counts.headHandedOver).toBe(0);
  });

  it('a refused signature goes to the SDK, which reports it as for any request', async () => {
    const drv = driver('not-the-secret');
    const err = await drv.head('plain.txt').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).op).toBe('head');
    expect({ answered: drv.direct.counts.head, handedOver: drv.direct.counts.headHandedOver }).toEqual({ answered: 0, handedOver: 1 });
  });
});

describe('PUT of a whole object', () => {
  const body = randomBytes(5000);
  const source = async (offset: number, length: number) => body.subarray(offset, offset + length);

  it('sends it itself: the object, its metadata and content type as the SDK reads them', async () => {
    const drv = driver();
    const key = "put/ü é+%&=;,@$[]~!'()*.bin";
    const r = await drv.write(key, body.length, source, { meta: { mode: '33188', mtime: '1700000000.25', xattr: 'user.a=b' }, contentType: 'application/x-thing' });
    const sdk = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(r).toMatchObject({ etag: sdk.ETag!.replace(/"/g, ''), result: 0 });
    expect({ size: sdk.ContentLength, meta: sdk.Metadata, type: sdk.ContentType }).toEqual({ size: 5000, meta: { mode: '33188', mtime: '1700000000.25', xattr: 'user.a=b' }, type: 'application/x-thing' });
    expect((await drv.read(key, 0, body.length)).data.equals(body)).toBe(true);
    expect({ put: drv.direct.counts.put, handedOver: drv.direct.counts.putHandedOver }).toEqual({ put: 1, handedOver: 0 });
  });

  it('a refused signature goes to the SDK, which reports it', async () => {
    const drv = driver('not-the-secret');
    const err = await drv.write('put/refused', body.length, source, { meta: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect(drv.direct.counts).toMatchObject({ put: 0, putHandedOver: 1 });
  });
});

describe('ranged GET into a file by libcurl', () => {
  it('writes exactly the range at the offset asked, signed as the server checks', async () => {
    const drv = driver();
    const { fd, file } = dataFile(4 * MiB);
    try {
      expect(await drv.readToFile('big/ü +.bin', MiB, 2 * MiB + 1234, bigEtag, fd, 2 * MiB)).toBe(true);
      const got = readFileSync(file);
      expect(got.length).toBe(4 * MiB + 1234);
      expect(got.subarray(0, 2 * MiB).every((b) => b === 0xee)).toBe(true);
      expect(got.subarray(2 * MiB).equals(BIG.subarray(MiB))).toBe(true);
      expect({ get: drv.direct.counts.get, handedOver: drv.direct.counts.getHandedOver }).toEqual({ get: 1, handedOver: 0 });
    } finally {
      closeSync(fd);
    }
  });

  it('another ETag (If-Match refused) or a refused signature: false, and nothing written', async () => {
    for (const [drv, etag] of [[driver(), 'd41d8cd98f00b204e9800998ecf8427e'], [driver('not-the-secret'), bigEtag]] as const) {
      const { fd, file } = dataFile(MiB);
      try {
        expect(await drv.readToFile('big/ü +.bin', 0, MiB, etag, fd, 0)).toBe(false);
        expect(readFileSync(file).every((b) => b === 0xee)).toBe(true);
        expect(drv.direct.counts.getHandedOver).toBe(1);
      } finally {
        closeSync(fd);
      }
    }
  });

  it('on s3rver, which ignores If-Match, the ETag it answers with decides: another version is refused', async () => {
    const drv = new S3Storage(s3ConfigSchema.parse({ bucket: BUCKET, endpoint: s3rver.endpoint, credentials: EMBEDDED_CREDENTIALS }));
    drivers.push(drv);
    const etag = (await drv.head('big/ü +.bin'))!.etag;
    const { fd, file } = dataFile(MiB);
    try {
      expect(await drv.readToFile('big/ü +.bin', 5, MiB - 5, 'd41d8cd98f00b204e9800998ecf8427e', fd, 5)).toBe(false);
      expect(await drv.readToFile('big/ü +.bin', 5, MiB - 5, etag, fd, 5)).toBe(true);
      expect(readFileSync(file).subarray(5).equals(BIG.subarray(5, MiB))).toBe(true);
      expect(drv.direct.counts).toMatchObject({ get: 1, getHandedOver: 1 });
    } finally {
      closeSync(fd);
    }
  });
});

describe('the vault fetches through it', () => {
  it('a cold read of a file: every range by libcurl, the bytes and the block checksums right', async () => {
    const drv = new S3Storage(s3ConfigSchema.parse({ bucket: BUCKET, endpoint: s3rver.endpoint, credentials: EMBEDDED_CREDENTIALS }));
    drivers.push(drv);
    const head = (await drv.head('big/ü +.bin'))!;
    const bs = 256 * 1024;
    const dir = scratchDir('direct-vault');
    const vault = await Vault.open({ dir, storage: drv, blockSize: bs, fetchBlocks: 4, readAheadBlocks: 4 });
    try {
      const f = await vault.openFile('big/ü +.bin', { etag: head.etag, size: head.size }, { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 });
      const parts: Buffer[] = [];
      for (let off = 0; off < BIG.length; off += 100_000) parts.push(await f.read(off, Math.min(100_000, BIG.length - off)));
      expect(Buffer.concat(parts).equals(BIG)).toBe(true);
      expect(drv.direct.counts.get).toBeGreaterThanOrEqual(4);
      expect(drv.direct.counts.getHandedOver).toBe(0);
      await vault.closeFile(f);
    } finally {
      await vault.close();
    }
    // What `s3vault fsck` does: every clean block's bytes against the checksum the fetch recorded.
    const report = await checkAndRepair(dir);
    expect(report.blocksChecked).toBe(Math.ceil(BIG.length / bs));
    expect(report.droppedClean).toEqual([]);
  });
});

describe('timeouts, as the SDK has them', () => {
  it('a connection that does not come up within connectMs is handed over, not waited on for idleMs', async () => {
    // An agent whose sockets never connect (their name lookup never answers): as an endpoint that drops packets.
    class Stalling extends http.Agent {
      override createConnection(): net.Socket {
        return net.connect({ host: 'stalled.invalid', port: 9, lookup: () => undefined });
      }
    }
    const client = new S3Client({ endpoint: 'http://127.0.0.1:9', region: 'us-east-1', forcePathStyle: true, credentials: EMBEDDED_CREDENTIALS });
    const direct = new DirectRequests(client, BUCKET, { http: new Stalling(), https: new https.Agent() }, { connectMs: 300, idleMs: 60_000 });
    const started = Date.now();
    expect(await direct.head('any')).toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(direct.counts.headHandedOver).toBe(1);
    client.destroy();
  });
});
