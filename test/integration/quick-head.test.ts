/**
 * HEADs without the SDK's middleware (src/storage/quick-head.ts) against a server that checks signatures (Ceph
 * RGW, which s3rver is not): they must be answered by the quick path itself — a signing mistake would be refused
 * (403) and quietly handed to the SDK — and give exactly what the SDK's HeadObject gives, odd keys included.
 */
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRgwServer, type RgwServer } from '../../src/storage/rgw-server.js';
import { s3ConfigSchema } from '../../src/storage/config.js';
import { StorageError } from '../../src/storage/rwresult.js';
import { S3Storage } from '../../src/storage/s3.js';

const BUCKET = 'quick';
const KEYS = ['plain.txt', 'dir with space/ü-é+%&=;,@$[]~.txt', "sub/!'()*#?.bin", 'a/b/c/deep'];

let rgw: RgwServer;
let client: S3Client;
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
}, 180_000);

afterAll(async () => {
  for (const d of drivers) await d.close();
  client?.destroy();
  await rgw?.stop();
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
    expect({ answered: drv.quickHead.answered, handedOver: drv.quickHead.handedOver }).toEqual({ answered: KEYS.length + 1, handedOver: 0 });
  });

  it('under a prefix too', async () => {
    const drv = driver(undefined, 'a/b');
    expect(await drv.head('c/deep')).toMatchObject({ key: 'c/deep', size: 22, meta: { note: 'key 3' } });
    expect(drv.quickHead.handedOver).toBe(0);
  });

  it('a refused signature goes to the SDK, which reports it as for any request', async () => {
    const drv = driver('not-the-secret');
    const err = await drv.head('plain.txt').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).op).toBe('head');
    expect({ answered: drv.quickHead.answered, handedOver: drv.quickHead.handedOver }).toEqual({ answered: 0, handedOver: 1 });
  });
});
