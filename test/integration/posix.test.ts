/**
 * POSIX semantics on a real mount (issue 6), one behaviour per test, driven with ordinary tools (and a small C
 * helper for the calls the shell lacks: renameat2 flags, SEEK_DATA/SEEK_HOLE, PUNCH_HOLE). What each operation
 * does on S3 is checked on the server with the SDK.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, mount, type TestMount } from '../helpers/mount.js';
import { startTestServer, type TestServer } from '../helpers/s3.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { sh, shAsync, shResult } from '../helpers/sh.js';
import { scratchDir } from '../helpers/scratch.js';
import { buildCHelper } from '../helpers/c-helper.js';

const BUCKET = 'posix-test';
let s3: TestServer;
let m: TestMount;
let mp: string;
let args: string[];
let FSOPS: string;

const flush = () => sh(`${process.execPath} ${BIN} flush --wait ${mp}`, 120);
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

beforeAll(async () => {
  FSOPS = buildCHelper('fsops');
  s3 = await startTestServer();
  await s3.createBucket(BUCKET);
  const cfg = path.join(scratchDir('cfg'), 'config.json');
  writeFileSync(cfg, JSON.stringify({ fs: { metadataTtlMs: 1500, listingTtlMs: 1500, attrTimeoutSec: 1 } }));
  args = ['--flush-delay', '200', '--capacity', '10T', '--config', cfg];
  m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, extraArgs: args });
  mp = m.mountpoint;
});

afterAll(async () => {
  await m?.stop();
  await s3?.stop();
});

describe('POSIX attributes persist in S3 metadata (s3fs/rclone conventions)', () => {
  it('chmod, chown and utimens reach the object as mode/uid/gid/mtime', async () => {
    sh(`echo attrs > ${mp}/attrs.txt && chmod 750 ${mp}/attrs.txt && chown 1234:2345 ${mp}/attrs.txt && touch -m -d @1600000000 ${mp}/attrs.txt`);
    flush();
    const head = await s3.head(BUCKET, 'attrs.txt');
    expect(head?.meta).toMatchObject({ mode: String(0o100750), uid: '1234', gid: '2345', mtime: '1600000000' });
    expect(sh(`stat -c '%a %u %g %Y' ${mp}/attrs.txt`).trim()).toBe('750 1234 2345 1600000000');
  });

  it('a metadata-only change of an uploaded file is a server-side copy, the data unchanged', async () => {
    sh(`chmod 604 ${mp}/attrs.txt`);
    const head = await s3.head(BUCKET, 'attrs.txt');
    expect(head?.meta.mode).toBe(String(0o100604));
    expect((await s3.get(BUCKET, 'attrs.txt')).toString()).toBe('attrs\n');
  });
});

describe('symbolic links are s3fs symlink objects', () => {
  it('ln -s stores the target as the body with S_IFLNK in the mode; readlink and following work', async () => {
    sh(`echo target > ${mp}/real.txt && ln -s real.txt ${mp}/link.txt`);
    expect(sh(`readlink ${mp}/link.txt`).trim()).toBe('real.txt');
    expect(sh(`cat ${mp}/link.txt`)).toBe('target\n');
    expect(sh(`stat -c %F ${mp}/link.txt`).trim()).toBe('symbolic link');
    expect(await s3.head(BUCKET, 'link.txt')).toBeNull(); // journaled: uploaded by the write-back queue
    flush();
    const head = await s3.head(BUCKET, 'link.txt');
    expect(Number(head?.meta.mode) & 0o170000).toBe(0o120000);
    expect((await s3.get(BUCKET, 'link.txt')).toString()).toBe('real.txt');
  });

  it('reads a symlink object another tool wrote, and renames and deletes links', async () => {
    await s3.put(BUCKET, 'real.txt', 'target\n'); // the link's target, as the test before leaves it (this one runs alone too)
    await s3.put(BUCKET, 'ext/link', '../real.txt', { mode: String(0o120777), mtime: '1600000000' });
    // The root was listed a moment ago (the test before): a name another tool adds shows within the metadata
    // lifetime, or at once after a refresh.
    sh(`${process.execPath} ${BIN} refresh ${mp}`);
    expect(sh(`readlink ${mp}/ext/link`).trim()).toBe('../real.txt');
    expect(sh(`cat ${mp}/ext/link`)).toBe('target\n');
    sh(`mv ${mp}/ext/link ${mp}/ext/moved && test -L ${mp}/ext/moved && rm ${mp}/ext/moved`);
    flush(); // the delete is journaled, and sent batched
    expect([await s3.head(BUCKET, 'ext/moved'), await s3.head(BUCKET, 'ext/link')]).toEqual([null, null]);
    expect(shResult(`ln -s x ${mp}/real.txt`).code).not.toBe(0); // EEXIST
  });
});

describe('extended attributes', () => {
  it('user.* attributes are stored in s3fs’s x-amz-meta-xattr and survive a remount', async () => {
    sh(`echo x > ${mp}/xa.txt && setfattr -n user.color -v blue ${mp}/xa.txt && setfattr -n user.bin -v 0x00ff10 ${mp}/xa.txt`);
    expect(sh(`getfattr --only-values -n user.color ${mp}/xa.txt`)).toBe('blue');
    flush();
    const head = await s3.head(BUCKET, 'xa.txt');
    const decoded = JSON.parse(decodeURIComponent(head!.meta.xattr!)) as Record<string, string>;
    expect(Buffer.from(decoded['user.color']!, 'base64').toString()).toBe('blue');
    expect(Buffer.from(decoded['user.bin']!, 'base64')).toEqual(Buffer.from([0, 0xff, 0x10]));
    sh(`setfattr -x user.bin ${mp}/xa.txt`);
    sh(`mkdir ${mp}/xdir && setfattr -n user.d -v dirval ${mp}/xdir`);
    await m.stop();
    m = await mount({ endpoint: s3.endpoint, bucket: BUCKET, vault: m.vault, mountpoint: mp, extraArgs: args });
    expect(sh(`getfattr -d ${mp}/xa.txt`)).toContain('user.color="blue"');
    expect(sh(`getfattr -d ${mp}/xa.txt`)).not.toContain('user.bin');
    expect(sh(`getfattr --only-values -n user.d ${mp}/xdir`)).toBe('dirval');
    expect(shResult(`getfattr -n user.none ${mp}/xa.txt`).stderr).toContain('No such attribute');
    // Names outside user.* are not supported (EOPNOTSUPP, which `ls -l` remembers for the whole mount), not absent.
    expect(shResult(`getfattr -n security.selinux ${mp}/xa.txt`).stderr).toContain('Operation not supported');
    expect(shResult(`getfattr -n system.posix_acl_access ${mp}/xa.txt`).stderr).toContain('Operation not supported');
  });

  it('refuses namespaces S3 cannot hold, and values past S3’s 2 KiB of metadata', () => {
    expect(shResult(`setfattr -n trusted.x -v 1 ${mp}/xa.txt`).code).not.toBe(0);
    const r = shResult(`setfattr -n user.big -v ${'v'.repeat(3000)} ${mp}/xa.txt`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Argument list too long/);
  });
});

describe('open files, renames and deletes', () => {
  it('an unlinked open file keeps working for its handle', () => {
    sh(`head -c 3000000 /dev/urandom > ${mp}/open-unlink.bin`);
    flush();
    const sum = sh(`md5sum < ${mp}/open-unlink.bin`);
    sh(`${process.execPath} ${BIN} refresh ${mp}`); // forget the data is cached: the handle must still read it
    const out = sh(`exec 3<${mp}/open-unlink.bin; rm ${mp}/open-unlink.bin; test ! -e ${mp}/open-unlink.bin; md5sum <&3`);
    expect(out).toBe(sum);
  });

  it('a directory removed while in use: a shell in it still stats and lists it (empty, no link), creating there is ENOENT', () => {
    // Past the kernel's 1 s attribute lifetime, so both answers come from s3vault. Before, both were ESTALE.
    const out = sh(`bash -c "mkdir ${mp}/gone && chmod 700 ${mp}/gone && cd ${mp}/gone && rmdir ../gone && sleep 1.5 && stat -c '%h %a' . && ls -a . | wc -l && touch x 2>&1; true"`, 30);
    expect(out).toBe('0 700\n0\ntouch: cannot touch \'x\': No such file or directory\n');
    // A directory replaced by a rename while a descriptor holds it open: fstat still answers.
    const py = `import os, time; os.mkdir('${mp}/held'); fd = os.open('${mp}/held', os.O_RDONLY); os.mkdir('${mp}/newer'); os.rename('${mp}/newer', '${mp}/held'); time.sleep(1.5); st = os.fstat(fd); print(oct(st.st_mode), st.st_nlink)`;
    expect(sh(`python3 -c ${q(py)}`, 30)).toBe('0o40755 0\n');
  });

  it('a directory moved while a shell inside it creates and removes files: the move succeeds and every change lands under the new name, in S3 too', async () => {
    // The kernel locks only the moved directory itself, not its subdirectories: these changes reach s3vault while
    // it copies the tree. Before, the move failed with EIO half-way (a copy met a file removed meanwhile), leaving
    // both trees, and files made meanwhile stayed under the old name.
    sh(`mkdir -p ${mp}/mv-race/sub && cd ${mp}/mv-race && for i in $(seq 1 300); do echo $i > f$i; done && for i in $(seq 1 200); do echo $i > sub/f$i; done`, 120);
    flush();
    const out = sh(`bash -c '(cd ${mp}/mv-race/sub && for i in $(seq 1 200); do echo new$i > new$i; rm -f f$i; done; echo writer-done) & sleep 0.3; mv ${mp}/mv-race ${mp}/mv-raced 2>&1; echo mv=$?; wait'`, 120);
    expect(out).toContain('mv=0');
    expect(out).toContain('writer-done');
    const made = Array.from({ length: 200 }, (_, i) => `new${i + 1}`).sort();
    expect(sh(`ls ${mp}/mv-raced/sub`).trim().split('\n').sort()).toEqual(made);
    expect(shResult(`test -e ${mp}/mv-race`).code).toBe(1);
    flush();
    expect(await s3.list(BUCKET, 'mv-race/')).toEqual([]);
    const keys = await s3.list(BUCKET, 'mv-raced/sub/');
    expect(keys.filter((k) => !k.endsWith('/')).map((k) => k.slice('mv-raced/sub/'.length)).sort()).toEqual(made);
  });

  it('a renamed open file keeps its handle; writes through it land under the new name', () => {
    sh(`echo one > ${mp}/ren-a`);
    sh(`exec 3>>${mp}/ren-a; mv ${mp}/ren-a ${mp}/ren-b; echo two >&3; exec 3>&-`);
    expect(sh(`cat ${mp}/ren-b`)).toBe('one\ntwo\n');
    expect(shResult(`test -e ${mp}/ren-a`).code).toBe(1);
  });

  it('rename over an existing file replaces it; an open handle on the replaced file still reads it', () => {
    sh(`echo new > ${mp}/over-src && echo old > ${mp}/over-dst`);
    flush();
    expect(sh(`exec 3<${mp}/over-dst; mv ${mp}/over-src ${mp}/over-dst; cat <&3`)).toBe('old\n');
    expect(sh(`cat ${mp}/over-dst`)).toBe('new\n');
  });

  it('RENAME_NOREPLACE refuses an existing target; RENAME_EXCHANGE swaps files and directories', async () => {
    sh(`echo A > ${mp}/xa && echo B > ${mp}/xb && mkdir -p ${mp}/xd1 ${mp}/xd2 && echo in1 > ${mp}/xd1/f && echo in2 > ${mp}/xd2/g`);
    const r = shResult(`${FSOPS} noreplace ${mp}/xa ${mp}/xb`);
    expect(r.code).toBe(17); // EEXIST
    sh(`${FSOPS} exchange ${mp}/xa ${mp}/xb`);
    expect(sh(`cat ${mp}/xa ${mp}/xb`)).toBe('B\nA\n');
    sh(`${FSOPS} exchange ${mp}/xd1 ${mp}/xd2`);
    expect(sh(`cat ${mp}/xd1/g ${mp}/xd2/f`)).toBe('in2\nin1\n');
    expect(sh(`ls -a ${mp}`)).not.toContain('s3vault~xchg');
    flush();
    expect((await s3.get(BUCKET, 'xa')).toString()).toBe('B\n');
    expect((await s3.get(BUCKET, 'xd1/g')).toString()).toBe('in2\n');
  });

  it('a directory rename moves every key under it; rmdir of a non-empty directory is ENOTEMPTY', async () => {
    sh(`mkdir -p ${mp}/tree/a/b && echo 1 > ${mp}/tree/one && echo 2 > ${mp}/tree/a/b/two`);
    flush();
    sh(`mv ${mp}/tree ${mp}/tree2`);
    expect(sh(`find ${mp}/tree2 -type f | sort`)).toBe(`${mp}/tree2/a/b/two\n${mp}/tree2/one\n`);
    expect((await s3.get(BUCKET, 'tree2/a/b/two')).toString()).toBe('2\n');
    expect(await s3.head(BUCKET, 'tree/one')).toBeNull();
    const r = shResult(`rmdir ${mp}/tree2`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Directory not empty/);
  });

  it('a renamed directory leaves no trace at its old name: a new directory takes the name with its own attributes', () => {
    // Two directories made here (so the vault journals their markers), one with attributes of its own.
    sh(`mkdir ${mp}/was && mkdir ${mp}/was-plain && chmod 700 ${mp}/was && touch -d 2001-01-01 ${mp}/was`);
    sh(`mv ${mp}/was ${mp}/now && mv ${mp}/was-plain ${mp}/now-plain`);
    // At once, and once what the kernel and the mount remember of the names has expired (1 s, 1.5 s here).
    for (const wait of [0, 2]) {
      sh(`sleep ${wait}`);
      for (const old of ['was', 'was-plain']) expect(shResult(`stat ${mp}/${old}`).stderr).toMatch(/No such file/);
      expect(sh(`ls ${mp}`).split('\n').filter((n) => n.startsWith('was') || n.startsWith('now'))).toEqual(['now', 'now-plain']);
    }
    expect(sh(`stat -c '%a %Y' ${mp}/now`)).toBe(`700 ${Date.UTC(2001, 0, 1) / 1000}\n`);
    sh(`mkdir ${mp}/was`);
    const [mode, mtime] = sh(`stat -c '%a %Y' ${mp}/was`).trim().split(' ');
    expect(mode).toBe('755');
    expect(Number(mtime)).toBeGreaterThan(Date.now() / 1000 - 600);
    // The vault keeps no record of the old markers.
    expect(sh(`${process.execPath} ${BIN} status ${mp}`)).not.toMatch(/ was-plain\/$/m);
  });

  it('O_APPEND, O_TRUNC and O_EXCL', () => {
    sh(`echo a > ${mp}/flags && echo b >> ${mp}/flags`);
    expect(sh(`cat ${mp}/flags`)).toBe('a\nb\n');
    sh(`echo c > ${mp}/flags`);
    expect(sh(`cat ${mp}/flags`)).toBe('c\n');
    expect(shResult(`set -o noclobber; echo d > ${mp}/flags`).code).not.toBe(0);
    expect(sh(`cat ${mp}/flags`)).toBe('c\n');
  });

  it('flock and POSIX (fcntl) locks hold between processes on the mount (locks are local to it)', () => {
    sh(`echo l > ${mp}/locked`);
    // A holder keeps each lock for 3 s; a second process's non-blocking attempt must fail meanwhile.
    const flock = shResult(`(flock -x ${mp}/locked sleep 3 &) ; sleep 0.5; flock -n -x ${mp}/locked true`, 20);
    expect(flock.code).toBe(1);
    sh(`sleep 3`, 10);
    expect(shResult(`flock -n -x ${mp}/locked true`, 10).code).toBe(0);
    const py = (op: string) =>
      `python3 -c "import fcntl,sys,time; f=open('${mp}/locked','r+'); fcntl.lockf(f, fcntl.LOCK_EX${op === 'try' ? ' | fcntl.LOCK_NB' : ''}); time.sleep(${op === 'hold' ? 3 : 0})"`;
    const fcntlLock = shResult(`(${py('hold')} &) ; sleep 0.8; ${py('try')}`, 20);
    expect(fcntlLock.code).not.toBe(0);
    expect(fcntlLock.stderr).toMatch(/Resource temporarily unavailable|BlockingIOError/);
    sh(`sleep 3`, 10);
    expect(shResult(py('try'), 10).code).toBe(0);
  });

  it('hard links are refused with EPERM', () => {
    const r = shResult(`ln ${mp}/flags ${mp}/flags-link`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Operation not permitted/);
  });

  it('mknod makes an empty regular file (uploaded with its mode); FIFOs, sockets and devices are EPERM', async () => {
    sh(`python3 -c "import os; os.mknod('${mp}/made-by-mknod', 0o100640)"`);
    expect(sh(`stat -c '%F %a %s' ${mp}/made-by-mknod`).trim()).toBe('regular empty file 640 0');
    expect(shResult(`python3 -c "import os; os.mknod('${mp}/made-by-mknod')"`).stderr).toMatch(/FileExistsError/);
    flush();
    expect((await s3.head(BUCKET, 'made-by-mknod'))?.meta.mode).toBe(String(0o100640));
    for (const cmd of [`mkfifo ${mp}/fifo`, `mknod ${mp}/null c 1 3`, `python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('${mp}/sock')"`]) {
      const r = shResult(cmd);
      expect(r.code, cmd).not.toBe(0);
      expect(r.stderr, cmd).toMatch(/Operation not permitted/);
    }
    expect(sh(`ls ${mp}`)).not.toMatch(/^(fifo|null|sock)$/m);
  });
});

describe('space: sparse files, SEEK_DATA/SEEK_HOLE, fallocate, statfs', () => {
  it('a file extended by truncate has a hole before its data until it is uploaded', () => {
    sh(`truncate -s 8M ${mp}/sparse && echo tail >> ${mp}/sparse`);
    expect(sh(`${FSOPS} seek ${mp}/sparse 0`).trim()).toBe('data=8388608 hole=0');
    expect(sh(`${FSOPS} seek ${mp}/sparse 8388608`).trim()).toBe(`data=8388608 hole=${8 * 1024 * 1024 + 5}`);
    expect(sh(`${FSOPS} seek ${mp}/sparse 9000000`).trim()).toBe('data=-1 hole=-1'); // ENXIO past the end
    expect(sh(`cmp -n 8388608 ${mp}/sparse /dev/zero && tail -c 5 ${mp}/sparse`)).toBe('tail\n');
  });

  it('fallocate grows a file (zeros); PUNCH_HOLE zeroes a range and keeps the size', () => {
    sh(`fallocate -l 3M ${mp}/falloc`);
    expect(sh(`stat -c %s ${mp}/falloc`).trim()).toBe(String(3 * 1024 * 1024));
    sh(`printf 'xxxxxxxxxx' > ${mp}/punch && ${FSOPS} punch ${mp}/punch 2 5`);
    expect(sh(`od -An -c ${mp}/punch | tr -s ' '`).trim()).toBe('x x \\0 \\0 \\0 \\0 \\0 x x x');
    expect(sh(`stat -c %s ${mp}/punch`).trim()).toBe('10');
  });

  it('statfs reports the configured capacity', () => {
    const [blocks, size] = sh(`stat -f -c '%b %S' ${mp}`).trim().split(' ').map(Number);
    expect(blocks! * size!).toBe(10 * 1024 ** 4);
  });
});

describe('names and limits', () => {
  it('inode numbers stay stable while mounted', () => {
    sh(`echo i > ${mp}/ino-file`);
    const before = sh(`stat -c %i ${mp}/ino-file`);
    sh(`echo 3 > /proc/sys/vm/drop_caches; ls -l ${mp} > /dev/null`);
    expect(sh(`stat -c %i ${mp}/ino-file`)).toBe(before);
  });

  it('names over 255 bytes, keys over 1024 bytes and files over 5 TiB fail with clear errnos', () => {
    expect(shResult(`touch ${mp}/${'n'.repeat(256)}`).stderr).toMatch(/File name too long/);
    const deep = Array.from({ length: 5 }, () => 'd'.repeat(220)).join('/');
    expect(shResult(`mkdir -p ${mp}/${deep}`).stderr).toMatch(/File name too long/);
    expect(shResult(`truncate -s 6T ${mp}/huge`).stderr).toMatch(/File too large/);
  });

  it('a name that is not valid UTF-8 is refused with EILSEQ, not silently changed', () => {
    const r = shResult(`touch ${mp}/$'bad\\xff'`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Invalid or incomplete multibyte/);
  });

  it('names with spaces, Unicode, %, +, ?, # round-trip exactly, both ways', async () => {
    const name = 'sp ace 100% a+b ¿q? #1 ü日本.txt';
    sh(`echo mine > ${mp}/${q(name)}`);
    flush();
    expect((await s3.get(BUCKET, name)).toString()).toBe('mine\n');
    await s3.put(BUCKET, `ext/${name}`, 'theirs\n');
    sh(`${process.execPath} ${BIN} refresh ${mp}/ext`);
    expect(sh(`cat ${mp}/ext/${q(name)}`)).toBe('theirs\n');
    expect(sh(`ls ${mp}/ext`)).toContain(name);
  });

  it('a name with a newline or a tab round-trips, and s3vault status shows it escaped on one row', async () => {
    sh(`printf 'x' > ${mp}/$'line\\none\\ttab'`);
    expect(sh(`ls -b ${mp}`)).toContain('line\\none\\ttab\n');
    const rows = sh(`${process.execPath} ${BIN} status ${mp}`).split('\n');
    expect(rows.filter((r) => r.endsWith(' line\\none\\ttab'))).toHaveLength(1);
    expect(rows.some((r) => r === 'one\ttab' || r.startsWith('one'))).toBe(false);
    flush();
    expect((await s3.get(BUCKET, 'line\none\ttab')).toString()).toBe('x');
  });

  it('names containing ".s3vault~" are reserved for odd keys (EINVAL)', () => {
    expect(shResult(`touch ${mp}/x.s3vault~file`).stderr).toMatch(/Invalid argument/);
  });
});

describe('a request the kernel sent by inode number while a rename moved that inode', () => {
  it('a file another process opens while its rename runs opens where it went, as on a local disk', async () => {
    // The kernel names the file by its number; s3vault turned that into the old name when the open came, and the
    // open waited behind the rename. Before, it was then served at the old name: ENOENT.
    const proxy = await startFaultProxy(s3.server.port);
    const dir = scratchDir('moved-open');
    const cfg = path.join(dir, 'config.json');
    // Names stay valid in the kernel long enough that the open goes by number, with no look-up first.
    writeFileSync(cfg, JSON.stringify({ fs: { attrTimeoutSec: 60 } }));
    const pm = await mount({ endpoint: proxy.endpoint, bucket: BUCKET, mountpoint: path.join(dir, 'mnt'), vault: path.join(dir, 'vault'), extraArgs: ['--config', cfg] });
    try {
      const d = `${pm.mountpoint}/moving`;
      await shAsync(`mkdir ${d} && echo hello > ${d}/a && ${process.execPath} ${BIN} flush --wait ${pm.mountpoint} && stat ${d}/a > /dev/null`, 120);
      proxy.setMode('slow');
      const copying = proxy.waitFor(/x-amz-copy-source/i);
      const mv = shAsync(`mv ${d}/a ${d}/b`, 60);
      await copying; // the rename is under way in s3vault: the proxy holds its CopyObject for a second
      const read = shAsync(`cat ${d}/a`, 60);
      await mv;
      expect(await read).toBe('hello\n');
      proxy.setMode('pass');
      expect(await shAsync(`ls ${d}`, 30)).toBe('b\n');
    } finally {
      proxy.setMode('pass');
      await pm.stop();
      await proxy.close();
    }
  });
});

describe('other writers: changes show within the metadata lifetime, and at once after s3vault refresh', () => {
  it('s3vault refresh of a tree of 1000 files the kernel knows (each an invalidation of its inode and its name)', () => {
    // Before, past koffi's bound on asynchronous calls it failed: "Too many asynchronous calls are running".
    sh(`mkdir -p ${mp}/many && cd ${mp}/many && for i in $(seq 1 1000); do : > f$i; done && ls -l ${mp}/many > /dev/null`, 120);
    const r = shResult(`${process.execPath} ${BIN} refresh ${mp}/many`, 60);
    expect(r.stdout + r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(sh(`ls ${mp}/many | wc -l`).trim()).toBe('1000');
  });

  it('a directory another tool replaced by a file: the name is the file, a descriptor open on the directory keeps it', async () => {
    sh(`mkdir ${mp}/swapped && : > ${mp}/swapped/inside && ${process.execPath} ${BIN} flush --wait ${mp}`, 60);
    // A process with the directory open, then told to look again (a line on stdin): its descriptor, the name, the
    // descriptor again.
    const holder = spawn(process.execPath, ['-e', `
      const fs = require('fs');
      const fd = fs.openSync(${JSON.stringify(`${mp}/swapped`)}, 'r');
      console.log('open ' + fs.fstatSync(fd).isDirectory());
      process.stdin.once('data', () => {
        const out = {};
        try { out.fstat = fs.fstatSync(fd).isDirectory() ? 'dir' : 'other'; } catch (e) { out.fstat = e.code; }
        try { out.name = fs.statSync(${JSON.stringify(`${mp}/swapped`)}).isDirectory() ? 'dir' : 'file'; } catch (e) { out.name = e.code; }
        try { out.fstatAfter = fs.fstatSync(fd).isDirectory() ? 'dir' : 'other'; } catch (e) { out.fstatAfter = e.code; }
        console.log(JSON.stringify(out));
        process.exit(0);
      });`], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines: string[] = [];
    let buffered = '';
    holder.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      lines.push(...parts);
    });
    const line = async (n: number) => {
      for (let i = 0; i < 200 && lines.length < n; i++) await new Promise((r) => setTimeout(r, 50));
      if (lines.length < n) throw new Error(`the process holding the directory said ${JSON.stringify(lines)}`);
      return lines[n - 1]!;
    };
    try {
      expect(await line(1)).toBe('open true');
      const { DeleteObjectsCommand } = await import('@aws-sdk/client-s3');
      await s3.client.send(new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: [{ Key: 'swapped/' }, { Key: 'swapped/inside' }] } }));
      await s3.put(BUCKET, 'swapped', 'now a file\n');
      sh(`${process.execPath} ${BIN} refresh ${mp}`);
      holder.stdin.write('go\n');
      // Before, the look-up gave the file the directory's inode number: the kernel marked that inode bad, and the
      // open descriptor (a shell's working directory, too) answered EIO to everything.
      expect(JSON.parse(await line(2))).toEqual({ fstat: 'dir', name: 'file', fstatAfter: 'dir' });
    } finally {
      holder.kill();
    }
    expect(sh(`cat ${mp}/swapped`)).toBe('now a file\n');
  });

  it('an object replaced or deleted by another tool', async () => {
    await s3.put(BUCKET, 'shared.txt', 'version 1\n');
    // A name the last listing lacked exists once the listing's lifetime (1.5 s here) has passed.
    await new Promise((r) => setTimeout(r, 2000));
    expect(sh(`cat ${mp}/shared.txt`)).toBe('version 1\n');
    await s3.put(BUCKET, 'shared.txt', 'version two, longer\n');
    sh(`${process.execPath} ${BIN} refresh ${mp}/shared.txt`);
    expect(sh(`cat ${mp}/shared.txt`)).toBe('version two, longer\n');
    await s3.put(BUCKET, 'shared.txt', 'version 3\n');
    await new Promise((r) => setTimeout(r, 3000)); // the metadata lifetime of this mount is 1.5 s
    expect(sh(`cat ${mp}/shared.txt`)).toBe('version 3\n');
    await s3.client.send(new (await import('@aws-sdk/client-s3')).DeleteObjectCommand({ Bucket: BUCKET, Key: 'shared.txt' }));
    sh(`${process.execPath} ${BIN} refresh ${mp}`);
    expect(sh(`ls ${mp}`)).not.toContain('shared.txt');
    expect(shResult(`cat ${mp}/shared.txt`).code).not.toBe(0);
  });
});
