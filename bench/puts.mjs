// For bench/small-files.sh: a warm SDK client that, told "go" on stdin, PUTs N objects of 4 KiB under PREFIX/ (32 at
// once, as the bench's raw SDK row does) and prints its time in seconds.
//   node bench/puts.mjs ENDPOINT PREFIX N   (bucket "bench"; credentials from the environment)
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
const [endpoint, prefix, n] = process.argv.slice(2);
const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true });
const body = Buffer.alloc(4096, 1);
await client.send(new PutObjectCommand({ Bucket: 'bench', Key: `${prefix}-warm`, Body: body }));
console.log('ready');
await new Promise((r) => process.stdin.once('data', r));
const t0 = performance.now();
const q = new PQueue({ concurrency: 32 });
for (let j = 0; j < Number(n); j++) q.add(() => client.send(new PutObjectCommand({ Bucket: 'bench', Key: `${prefix}/f${j}`, Body: body })));
await q.onIdle();
console.log(((performance.now() - t0) / 1000).toFixed(2));
process.exit(0);
