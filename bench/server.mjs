// The S3 server a benchmark runs against, started on loopback: s3rver (the embedded default) or, with 'rgw', the
// Ceph RADOS Gateway (src/storage/rgw-server.ts). Needs `npm run build`. Returns the server and its credentials.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export async function startBenchServer(kind, dataDir) {
  if (kind === 'rgw') {
    const { startRgwServer } = await import(path.join(root, 'dist/storage/rgw-server.js'));
    const server = await startRgwServer();
    return { server, creds: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } };
  }
  const { startEmbeddedServer, EMBEDDED_CREDENTIALS } = await import(path.join(root, 'dist/storage/embedded-server.js'));
  return { server: await startEmbeddedServer({ dataDir }), creds: EMBEDDED_CREDENTIALS };
}
