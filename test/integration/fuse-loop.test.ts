/**
 * Where FUSE requests are served: on the Node main thread, /dev/fuse polled by libuv (src/fs/fuse/request-loop.ts),
 * or on libfuse's threads, the fallback when the main thread cannot poll it (forced here with
 * S3VAULT_FUSE_THREADS=1). Both must serve the same work alike. Which one runs is seen in /proc: a thread that waits
 * for requests the libfuse way sleeps in the kernel's fuse_dev_do_read (its wchan), and the main-thread loop has none.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIN, isMounted, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { scratchDir } from '../helpers/scratch.js';
import { sh } from '../helpers/sh.js';

const BUCKET = 'fuse-loop-test';
const MiB = 1024 * 1024;
let s3: TestServer;
let m: TestMount | undefined;

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** Threads of `pid` sleeping in the kernel function `wchan`. */
function threadsIn(pid: number, wchan: string): number {
  return readdirSync(`/proc/${pid}/task`).filter((t) => {
    try {
      return readFileSync(`/proc/${pid}/task/${t}/wchan`, 'utf8') === wchan;
    } catch {
      return false; // the thread ended meanwhile
    }
  }).length;
}

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
});

afterEach(async () => {
  await m?.stop();
  m = undefined;
});

afterAll(async () => {
  await s3?.stop();
});

describe.each([
  ['the main thread', {}],
  ["libfuse's threads", { S3VAULT_FUSE_THREADS: '1' }],
])('FUSE requests served on %s', (where, env) => {
  const tag = Object.keys(env).length ? 'threads' : 'main';

  it('serves large writes and reads, names, attributes, renames and removals; an unmount from outside ends it cleanly', async () => {
    // In storage only: writes into it go through s3vault in 1 MiB requests (no passthrough for a file not all in
    // the vault), and its reads too.
    const remote = randomBytes(4 * MiB + 123);
    await s3.put(BUCKET, `${tag}/remote.bin`, remote);
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, env });
    const mp = m.mountpoint;
    expect(threadsIn(m.child.pid!, 'fuse_dev_do_read') > 0).toBe(tag === 'threads');

    const patch = randomBytes(2 * MiB);
    const patchFile = path.join(scratchDir('patch'), 'patch.bin');
    writeFileSync(patchFile, patch);
    sh(`dd if=${patchFile} of=${mp}/${tag}/remote.bin bs=1M seek=1 conv=notrunc status=none`, 30);
    const expected = Buffer.concat([remote.subarray(0, MiB), patch, remote.subarray(3 * MiB)]);
    expect(sh(`md5sum ${mp}/${tag}/remote.bin`, 30).split(' ')[0]).toBe(md5(expected));

    // Many small requests: a tree, extended attributes, a rename, a removal, a listing.
    sh(`mkdir -p ${mp}/${tag}/d/e && for i in $(seq 1 40); do echo "file $i" > ${mp}/${tag}/d/e/f$i; done`, 30);
    sh(`setfattr -n user.color -v blue ${mp}/${tag}/d/e/f7`, 10);
    expect(sh(`getfattr --only-values -n user.color ${mp}/${tag}/d/e/f7`, 10)).toBe('blue');
    sh(`mv ${mp}/${tag}/d ${mp}/${tag}/moved && rm ${mp}/${tag}/moved/e/f1`, 30);
    expect(sh(`ls ${mp}/${tag}/moved/e | wc -l`, 10).trim()).toBe('39');
    expect(sh(`cat ${mp}/${tag}/moved/e/f40`, 10)).toBe('file 40\n');

    // Everything reaches storage, then an unmount from outside (not s3vault's signal) ends the process with 0.
    sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 60);
    expect(md5(await s3.get(BUCKET, `${tag}/remote.bin`))).toBe(md5(expected));
    expect((await s3.get(BUCKET, `${tag}/moved/e/f40`)).toString()).toBe('file 40\n');
    const exited = new Promise<number | null>((resolve) => m!.child.once('exit', (code) => resolve(code)));
    sh(`fusermount3 -u ${mp}`, 30);
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running 30 s after the unmount'), 30_000))]);
    expect(code).toBe(0);
    expect(isMounted(mp)).toBe(false);
    expect(m.output()).not.toMatch(/cannot poll|reading FUSE requests failed|handler failed/);
  }, 120_000);
});
