/**
 * Random reads fill the kernel's page cache a 1 MiB window at a time (PageStore, FUSE notify_store). The proof that
 * a read was answered by the kernel: it succeeds while s3vault is stopped (SIGSTOP); a read that needs s3vault
 * waits. Then what the fill must never do: overwrite what a writer wrote, or grow a file past its size.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { sh } from '../helpers/sh.js';

const BUCKET = 'page-cache-fill';
const MiB = 1024 * 1024;
let s3: TestServer;
let m: TestMount | undefined;
const data = randomBytes(8 * MiB + 1000);
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/**
 * The scripts' start: the file opened, and probe(off), one 4 KiB read at off given 3 s to answer (its md5, or
 * "failed"; a read that needs a stopped s3vault waits).
 */
const PROBE_START = `
import hashlib, os, signal, sys, threading, time
path, pid = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
def probe(off):
    out = []
    t = threading.Thread(target=lambda: out.append(os.pread(fd, 4096, off)), daemon=True)
    t.start()
    t.join(3)
    return hashlib.md5(out[0]).hexdigest() if out else 'failed'
`;

/**
 * Cold, open the file, read 4 KiB at 5 MiB + 12 345 (a random read: its window [5, 6) MiB is stored), then stop
 * s3vault and read, each with 3 s to answer: another page of that window, and a page of the untouched window at
 * 2 MiB. Prints the md5 of each piece, or "failed".
 */
const PROBE = `${PROBE_START}first = os.pread(fd, 4096, 5 * 1048576 + 12345)
time.sleep(0.3)  # the store runs after the read is answered
os.kill(pid, signal.SIGSTOP)
try:
    inside = probe(5 * 1048576 + 700000)
    outside = probe(2 * 1048576 + 4096)
finally:
    os.kill(pid, signal.SIGCONT)
time.sleep(1)
print(hashlib.md5(first).hexdigest(), inside, outside)
os._exit(0)  # the stuck reader thread, if any, has its answer by now
`;

/**
 * The kernel drops a stored window (posix_fadvise DONTNEED, as fio does at each pass over a file): a read there
 * reaches s3vault again (proven with s3vault stopped), and, over a second after the store, stores the window again,
 * so a later read in it needs s3vault no more. Prints the md5 of each piece, or "failed".
 */
const DROP = `${PROBE_START}os.pread(fd, 4096, 5 * 1048576 + 12345)
time.sleep(0.3)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
def stopped(off):
    os.fstat(fd)  # fresh attributes: a read after they expire (1 s) asks s3vault for them first
    os.kill(pid, signal.SIGSTOP)
    try:
        return probe(off)
    finally:
        os.kill(pid, signal.SIGCONT)
dropped = stopped(5 * 1048576 + 700000)
time.sleep(1)  # the stuck read is answered once s3vault runs again, 3 s after the store: the window is stored again
again = stopped(5 * 1048576 + 900000)
time.sleep(1)
print(dropped, again)
os._exit(0)
`;

/**
 * A reader reads at random offsets (each a store) while, again and again, a writer opens the file, writes a
 * marker into a window the reader is storing, and closes it; the reader then reads the marker back. A store that
 * landed after the write would bring back the old bytes. Prints "ok" or the first mismatch.
 */
const RACE = `
import os, random, sys, threading
path = sys.argv[1]
size = os.path.getsize(path)
rfd = os.open(path, os.O_RDONLY)
stop = False
def reader():
    while not stop:
        os.pread(rfd, 4096, random.randrange(0, size - 4096))
t = threading.Thread(target=reader)
t.start()
bad = None
try:
    for i in range(200):
        off = random.randrange(0, size - 64)
        marker = ('marker %d ' % i).encode().ljust(32, b'.')
        wfd = os.open(path, os.O_RDWR)
        os.pwrite(wfd, marker, off)
        os.close(wfd)
        for _ in range(3):
            got = os.pread(rfd, 32, off)
            if got != marker:
                bad = 'round %d at %d: %r' % (i, off, got)
                break
        if bad: break
finally:
    stop = True
    t.join()
print(bad or 'ok')
`;

const PROBE_SCRIPT = path.join(os.tmpdir(), `s3vault-fill-probe-${process.pid}.py`);
const RACE_SCRIPT = path.join(os.tmpdir(), `s3vault-fill-race-${process.pid}.py`);
const DROP_SCRIPT = path.join(os.tmpdir(), `s3vault-fill-drop-${process.pid}.py`);

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  writeFileSync(PROBE_SCRIPT, PROBE);
  writeFileSync(RACE_SCRIPT, RACE);
  writeFileSync(DROP_SCRIPT, DROP);
});

afterEach(async () => {
  await m?.stop();
  m = undefined;
});

afterAll(async () => {
  await s3?.stop();
  rmSync(PROBE_SCRIPT, { force: true });
  rmSync(RACE_SCRIPT, { force: true });
  rmSync(DROP_SCRIPT, { force: true });
});

const piece = (off: number) => md5(data.subarray(off, off + 4096));

describe('page cache fill on random reads', () => {
  it("a random read brings its whole 1 MiB window into the kernel's cache: the rest of it reads without s3vault", async () => {
    await s3.put(BUCKET, 'big.bin', data);
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    const out = sh(`python3 ${PROBE_SCRIPT} ${m.mountpoint}/big.bin ${m.child.pid}`, 40).trim().split(' ');
    expect(out).toEqual([piece(5 * MiB + 12345), piece(5 * MiB + 700000), 'failed']);
  });

  it('a window the kernel dropped (fadvise DONTNEED, memory pressure) is stored again by the next read that reaches s3vault', async () => {
    await s3.put(BUCKET, 'dropped.bin', data);
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    const out = sh(`python3 ${DROP_SCRIPT} ${m.mountpoint}/dropped.bin ${m.child.pid}`, 40).trim().split(' ');
    expect(out).toEqual(['failed', piece(5 * MiB + 900000)]);
  });

  it('off (fs.pageCacheFill false), the same read needs s3vault', async () => {
    const config = path.join(os.tmpdir(), `s3vault-nofill-${process.pid}.json`);
    writeFileSync(config, JSON.stringify({ fs: { pageCacheFill: false } }));
    try {
      m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: ['--config', config] });
      const out = sh(`python3 ${PROBE_SCRIPT} ${m.mountpoint}/big.bin ${m.child.pid}`, 40).trim().split(' ');
      expect(out).toEqual([piece(5 * MiB + 12345), 'failed', 'failed']);
    } finally {
      rmSync(config, { force: true });
    }
  });

  it('never brings back old bytes over a write, and never grows a file: writers and truncation beside random readers', async () => {
    await s3.put(BUCKET, 'race.bin', data);
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET });
    const mp = m.mountpoint;
    expect(sh(`python3 ${RACE_SCRIPT} ${mp}/race.bin`, 120).trim()).toBe('ok');
    // Shrink while a reader stores windows near the end: the size stays what truncate made it.
    const shrunk = sh(
      `python3 -c "
import os, threading
p='${mp}/race.bin'
fd=os.open(p, os.O_RDONLY)
stop=[]
def r():
    i=0
    while not stop:
        try: os.pread(fd, 4096, (i * 1234567) % (8 * 1048576)); i += 1
        except OSError: pass
t=threading.Thread(target=r); t.start()
for n in range(20):
    os.truncate(p, 3 * 1048576 + n)
    s = os.stat(p).st_size
    if s != 3 * 1048576 + n: print('size', s); break
stop.append(1); t.join(); os.close(fd)
print(os.stat(p).st_size)
"`,
      120,
    ).trim();
    expect(shrunk).toBe(String(3 * MiB + 19));
    sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 60);
    expect((await s3.get(BUCKET, 'race.bin')).length).toBe(3 * MiB + 19);
  });
});
