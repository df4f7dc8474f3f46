// The raw SDK reference for cold sequential reads: parallel ranged GETs of a 512 MiB object from the embedded server.
import { S3Client, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { startEmbeddedServer } from '../dist/storage/embedded-server.js';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const { mkdtempSync, rmSync } = await import('node:fs');
const dataDir = mkdtempSync('/var/tmp/s3vault-raw-');
const srv = await startEmbeddedServer({ dataDir, buckets: ['b'] });
const c = new S3Client({ endpoint: srv.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, cacheMiddleware: true });
const size = 512 * 1024 * 1024;
await c.send(new PutObjectCommand({ Bucket: 'b', Key: 'o', Body: Buffer.alloc(size, 1) }));
for (const [part, par] of [[8, 4], [4, 4], [8, 8]]) {
  const ps = part * 1024 * 1024; const t = Date.now(); let next = 0;
  async function worker() { while (next < size) { const o = next; next += ps; const r = await c.send(new GetObjectCommand({ Bucket: 'b', Key: 'o', Range: `bytes=${o}-${Math.min(size, o + ps) - 1}` })); await r.Body.transformToByteArray(); } }
  await Promise.all(Array.from({ length: par }, worker));
  console.log(`raw SDK ranged GET ${part} MiB x ${par}: ${(size / 1048576 / ((Date.now() - t) / 1000)).toFixed(0)} MiB/s`);
}
c.destroy(); await srv.stop();
rmSync(dataDir, { recursive: true, force: true });
