/**
 * Read replies reuse memory: each reply from a vault file is read into a buffer libfuse mallocs and frees on a
 * thread-pool thread. Under glibc's adaptive thresholds that buffer was at times mapped afresh (or its arena
 * trimmed) for every reply, so every page read was also a page fault: a cold 1 GiB `cat` cost 266 000 faults and
 * 3x the CPU. The mount fixes the thresholds (fixMallocThresholds). The churn shows reliably with V8's profiler
 * on (`--cpu-prof`), so the mount here runs with it: a cold read must fault far fewer pages than it reads.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { scratchDir } from '../helpers/scratch.js';
import { sh } from '../helpers/sh.js';

const BUCKET = 'read-memory';
const MiB = 1024 * 1024;
const SIZE = 192 * MiB;
let s3: TestServer;
let m: TestMount | undefined;

/** Minor page faults of a process so far (/proc/PID/stat field 10). */
const minorFaults = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[7]);

beforeAll(async () => {
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  await s3.put(BUCKET, 'big.bin', randomBytes(SIZE));
});

afterAll(async () => {
  await m?.stop('SIGKILL');
  await s3?.stop();
});

describe('read replies', () => {
  it('a cold read of 192 MiB faults in far fewer pages than it reads (no buffer mapped afresh per reply)', async () => {
    const prof = scratchDir('read-memory-prof');
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${path.join(prof, 'p')}`] });
    sh(`stat ${m.mountpoint}/big.bin > /dev/null`);
    const before = minorFaults(m.child.pid!);
    sh(`cat ${m.mountpoint}/big.bin | md5sum > /dev/null`, 120);
    const faults = minorFaults(m.child.pid!) - before;
    // Every page read afresh would be SIZE / 4096 = 49 152 faults; reused buffers leave a few thousand.
    expect(faults).toBeLessThan(SIZE / 4096 / 4);
    await m.stop();
    m = undefined;
  });
});
