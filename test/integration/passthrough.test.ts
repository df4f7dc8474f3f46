/**
 * FUSE passthrough: a file whose data is all in the vault is read by the kernel straight from the vault's data
 * file. The proof that a read did not go through s3vault: it succeeds while the s3vault process is stopped
 * (SIGSTOP) — an ordinary FUSE read would wait for it. The rest checks what passthrough must not break: files
 * not yet cached, writers beside passthrough readers (the kernel gives the inode one I/O mode, so they are
 * passthrough too and the vault adopts their changes), shared mappings, and eviction under a passthrough reader.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh } from '../helpers/sh.js';

const BUCKET = 'passthrough-test';
let s3: TestServer;
let m: TestMount | undefined;

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/**
 * Open `file` (through the mount, while s3vault runs), stop s3vault, and hash what the open descriptor reads in
 * the next 5 s; then let s3vault go on, whatever happened. Returns the hash, or "failed" when the read needed
 * s3vault. In Python, one process: a forked shell would close the descriptor on exit, and every close(2) on
 * a FUSE file is a FLUSH request that waits for s3vault.
 */
const HASH_WHILE_STOPPED = `
import hashlib, os, signal, sys, threading, time
path, pid = sys.argv[1], int(sys.argv[2])
time.sleep(0.5)  # the kernel releases the writer's handle asynchronously: let that reach s3vault first
fd = os.open(path, os.O_RDONLY)
result = []
def read():
    h = hashlib.md5()
    while True:
        b = os.read(fd, 1 << 20)
        if not b: break
        h.update(b)
    result.append(h.hexdigest())
os.kill(pid, signal.SIGSTOP)
try:
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    got = result[0] if result else 'failed'
finally:
    os.kill(pid, signal.SIGCONT)
t.join(20)
os.close(fd)
print(got)
`;

function hashWhileStopped(mount: TestMount, file: string): string {
  writeFileSync(SCRIPT, HASH_WHILE_STOPPED);
  return sh(`python3 ${SCRIPT} '${file}' ${mount.child.pid}`, 40).trim();
}

const SCRIPT = path.join(os.tmpdir(), `s3vault-hash-while-stopped-${process.pid}.py`);

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
});

afterAll(async () => {
  await m?.stop();
  await s3?.stop();
  rmSync(SCRIPT, { force: true });
});

describe('FUSE passthrough', () => {
  it('a file all in the vault is read by the kernel without s3vault; a file not yet cached is read through it first', async () => {
    const remote = randomBytes(3 * 1024 * 1024 + 777);
    await s3.put(BUCKET, 'remote.bin', remote);
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    const local = randomBytes(2 * 1024 * 1024 + 5);
    writeFileSync(path.join(m.mountpoint, 'local.bin'), local);
    // Written through the mount: every block is in the vault (not yet uploaded).
    expect(hashWhileStopped(m, path.join(m.mountpoint, 'local.bin'))).toBe(md5(local));
    // In storage only: the first read goes through s3vault (and fills the vault) ...
    expect(sh(`md5sum ${m.mountpoint}/remote.bin`, 30).split(' ')[0]).toBe(md5(remote));
    // ... the next open is passthrough.
    expect(hashWhileStopped(m, path.join(m.mountpoint, 'remote.bin'))).toBe(md5(remote));
    expect(m.output()).not.toMatch(/passthrough unavailable/);
  });

  it('writers beside a passthrough reader: appends, truncation and a shared mapping reach the size, the reader and S3', async () => {
    const mp = m!.mountpoint;
    writeFileSync(path.join(mp, 'shared.txt'), 'hello world\n');
    // fd 3 reads by passthrough; the appending open of the same inode must then be passthrough too.
    const out = sh(
      `bash -c "exec 3<${mp}/shared.txt; echo appended >> ${mp}/shared.txt; stat -c %s ${mp}/shared.txt; cat <&3; ` +
        `python3 -c \\"import mmap,os; fd=os.open('${mp}/shared.txt',os.O_RDWR); m=mmap.mmap(fd,0); m[0:5]=b'HELLO'; m.flush(); m.close(); os.close(fd)\\"; ` +
        `exec 3<&-"`,
      30,
    );
    expect(out).toBe('21\nhello world\nappended\n');
    expect(sh(`cat ${mp}/shared.txt`)).toBe('HELLO world\nappended\n');
    expect(sh(`stat -c %s ${mp}/shared.txt`).trim()).toBe('21');
    sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 60);
    expect((await s3.get(BUCKET, 'shared.txt')).toString()).toBe('HELLO world\nappended\n');
    // Shrinking under the reader: it sees the new end.
    const shrunk = sh(`bash -c "exec 3<${mp}/shared.txt; truncate -s 5 ${mp}/shared.txt; cat <&3; exec 3<&-"`, 30);
    expect(shrunk).toBe('HELLO');
    sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 60);
    expect((await s3.get(BUCKET, 'shared.txt')).toString()).toBe('HELLO');
  });

  it('what a passthrough writer wrote shows at once: in a directory listing (ls -l) and to fstat of a removed file', () => {
    const mp = m!.mountpoint;
    // The listing's attributes (READDIRPLUS) become the kernel's own: an older size there would also cut reads short.
    // And an unlinked file written by passthrough: its handle's fstat. Before, both said 0.
    const py = [
      'import os, sys',
      'd = sys.argv[1]',
      "p, q = os.path.join(d, 'grow.log'), os.path.join(d, 'scratch.tmp')",
      'os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644))',
      'os.close(os.open(q, os.O_WRONLY | os.O_CREAT, 0o644))',
      'fd = os.open(p, os.O_RDWR | os.O_APPEND)',
      "os.write(fd, b'x' * 4145)",
      "print(dict((n, os.lstat(os.path.join(d, n)).st_size) for n in os.listdir(d))['grow.log'])",
      'os.close(fd)',
      'fd = os.open(q, os.O_RDWR)',
      'os.unlink(q)',
      "os.write(fd, b'y' * 5000)",
      'print(os.fstat(fd).st_size)',
      'os.close(fd)',
    ].join('\n');
    writeFileSync(SCRIPT, py);
    expect(sh(`python3 ${SCRIPT} ${mp}`, 30)).toBe('4145\n5000\n');
  });

  it('ftruncate and fallocate on a descriptor that wrote by passthrough act on the size its writes made', async () => {
    const mp = m!.mountpoint;
    // The vault last saw size 0; the kernel's passthrough writes made 8 KiB and 9000 bytes. Before, fallocate
    // inside the written bytes "grew" the file from 0 to the end of its range, cutting off the rest (9000 → 1100).
    // The ftruncate to the size the vault last saw must not be taken for "no change" either.
    const py = [
      'import os, sys',
      'd = sys.argv[1]',
      "fd = os.open(os.path.join(d, 'trunc.bin'), os.O_RDWR | os.O_CREAT, 0o644)",
      "os.write(fd, b'a' * 8192)",
      'os.ftruncate(fd, 0)',
      'print(os.fstat(fd).st_size)',
      'os.close(fd)',
      "fd = os.open(os.path.join(d, 'falloc.bin'), os.O_RDWR | os.O_CREAT, 0o644)",
      "os.write(fd, b'b' * 9000)",
      'os.posix_fallocate(fd, 100, 1000)',
      'print(os.fstat(fd).st_size)',
      'os.close(fd)',
      "print(os.stat(os.path.join(d, 'trunc.bin')).st_size, os.stat(os.path.join(d, 'falloc.bin')).st_size)",
    ].join('\n');
    writeFileSync(SCRIPT, py);
    expect(sh(`python3 ${SCRIPT} ${mp}`, 30)).toBe('0\n9000\n0 9000\n');
    sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 60);
    expect((await s3.get(BUCKET, 'trunc.bin')).length).toBe(0);
    expect((await s3.get(BUCKET, 'falloc.bin')).toString()).toBe('b'.repeat(9000));
  });

  it('eviction never takes the blocks of a file open by passthrough', async () => {
    await m?.stop();
    const pinned = randomBytes(4 * 1024 * 1024);
    await s3.put(BUCKET, 'pinned.bin', pinned);
    for (const n of [1, 2, 3]) await s3.put(BUCKET, `filler${n}.bin`, randomBytes(8 * 1024 * 1024));
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--cache-size', '10M'] });
    const mp = m.mountpoint;
    sh(`cat ${mp}/pinned.bin > /dev/null`, 30); // now all in the vault, clean: evictable once closed
    // Held open by passthrough while 24 MiB pass through a 10 MiB vault; then read through the same descriptor.
    const got = sh(`bash -c "exec 3<${mp}/pinned.bin; cat ${mp}/filler1.bin ${mp}/filler2.bin ${mp}/filler3.bin > /dev/null; md5sum <&3 | cut -d' ' -f1; exec 3<&-"`, 60).trim();
    expect(got).toBe(md5(pinned));
    // Once closed it may go; a later read fetches it again, whole.
    sh(`cat ${mp}/filler1.bin ${mp}/filler2.bin > /dev/null`, 60);
    expect(sh(`md5sum ${mp}/pinned.bin`, 30).split(' ')[0]).toBe(md5(pinned));
  });

  it('--no-passthrough: every read goes through s3vault (a read with s3vault stopped does not complete)', async () => {
    await m?.stop();
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--no-passthrough'] });
    writeFileSync(path.join(m.mountpoint, 'plain.bin'), randomBytes(1024 * 1024));
    sh(`bash -c "echo 3 > /proc/sys/vm/drop_caches"`);
    expect(hashWhileStopped(m, path.join(m.mountpoint, 'plain.bin'))).toBe('failed');
  });
});
