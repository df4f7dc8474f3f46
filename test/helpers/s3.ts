/** A real S3-compatible server (s3rver, the embedded default) on loopback for one test file, plus an SDK client. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { EMBEDDED_CREDENTIALS, startEmbeddedServer, type EmbeddedServer } from '../../src/storage/embedded-server.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

export interface TestServer {
  server: EmbeddedServer;
  endpoint: string;
  client: S3Client;
  dir: string;
  createBucket(name: string): Promise<void>;
  put(bucket: string, key: string, body: string | Buffer, meta?: Record<string, string>): Promise<void>;
  get(bucket: string, key: string): Promise<Buffer>;
  head(bucket: string, key: string): Promise<{ meta: Record<string, string>; size: number } | null>;
  /** Every key under a prefix, in S3's order. */
  list(bucket: string, prefix: string): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startTestServer(): Promise<TestServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-test-s3-'));
  const server = await startEmbeddedServer({ dataDir: dir });
  const client = new S3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: EMBEDDED_CREDENTIALS });
  return {
    server,
    endpoint: server.endpoint,
    client,
    dir,
    createBucket: async (name) => {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    put: async (bucket, key, body, meta) => {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, Metadata: meta }));
    },
    get: async (bucket, key) => {
      const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return Buffer.from(await r.Body!.transformToByteArray());
    },
    head: async (bucket, key) => {
      try {
        const r = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return { meta: r.Metadata ?? {}, size: r.ContentLength ?? 0 };
      } catch (err) {
        if ((err as { name?: string }).name === 'NotFound') return null;
        throw err;
      }
    },
    list: async (bucket, prefix) => {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const o of r.Contents ?? []) keys.push(o.Key!);
        token = r.NextContinuationToken;
      } while (token);
      return keys;
    },
    stop: async () => {
      client.destroy();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
