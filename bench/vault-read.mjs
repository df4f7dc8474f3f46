import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
// The vault alone (no FUSE; the server in its own process) reading a 512 MiB object sequentially from the embedded server in 128 KiB reads.
import { CreateBucketCommand, S3Client, PutObjectCommand } from '@aws-sdk/client-s3';
import { startBenchServer } from './server.mjs';
import { S3Storage } from '../dist/storage/s3.js';
import { s3ConfigSchema } from '../dist/storage/config.js';
import { Vault } from '../dist/cache/vault.js';
import { mkdtempSync, rmSync } from 'node:fs';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const serverDir = mkdtempSync('/var/tmp/vr-');
const { server: srv } = await startBenchServer('s3rver', serverDir);
const creds = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const c = new S3Client({ endpoint: srv.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: creds });
await c.send(new CreateBucketCommand({ Bucket: 'bkt' }));
const size = 512 * 1024 * 1024;
const put = await c.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'o', Body: Buffer.alloc(size, 1) }));
const storage = new S3Storage(s3ConfigSchema.parse({ bucket: 'bkt', endpoint: srv.endpoint, credentials: creds }));
const vaultDir = mkdtempSync(process.env.VDIR ?? '/var/tmp/vv-');
const vault = await Vault.open({ dir: vaultDir, storage, sizeLimit: 2 ** 31, fetchBlocks: Number(process.env.FETCH_BLOCKS ?? 16), readAheadBlocks: Number(process.env.AHEAD_BLOCKS ?? 64) });
const f = await vault.openFile('o', { etag: put.ETag.replace(/"/g, ''), size }, { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 });
const srvCpu = () => { const f = (require('fs').readFileSync(`/proc/${srv.pid}/stat`, 'utf8')).split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
const c0 = process.cpuUsage(); const s0 = srvCpu();
// PROFILE=<file>: a CPU profile of the read phase only.
let session;
if (process.env.PROFILE) {
  const { Session } = await import('node:inspector/promises');
  session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
}
const t = Date.now();
for (let off = 0; off < size; off += 131072) await f.read(off, 131072);
console.log(`vault sequential read without FUSE: ${(512 / ((Date.now() - t) / 1000)).toFixed(0)} MiB/s`);
{ const c = process.cpuUsage(c0); console.log(`cpu: vault ${((c.user + c.system) / 1e6).toFixed(2)} s (user ${(c.user / 1e6).toFixed(2)}), server ${(srvCpu() - s0).toFixed(2)} s, wall ${((Date.now() - t) / 1000).toFixed(2)} s`); }
if (session) {
  const { profile } = await session.post('Profiler.stop');
  require('fs').writeFileSync(process.env.PROFILE, JSON.stringify(profile));
}
const t2 = Date.now();
for (let off = 0; off < size; off += 131072) await f.read(off, 131072);
console.log(`again, from the vault: ${(512 / ((Date.now() - t2) / 1000)).toFixed(0)} MiB/s`);
await vault.close(); await storage.close(); c.destroy(); await srv.stop();
for (const d of [serverDir, vaultDir]) rmSync(d, { recursive: true, force: true });
