/**
 * A wrong struct offset corrupts memory silently (spec/fuse-binding.md): check every offset and size the
 * binding uses against the real libfuse3 headers, with a C program compiled here.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FileInfo } from '../../src/fs/cbfs/events.js';
import { loadFuse, OP_NAMES, OPS_SIZE } from '../../src/fs/fuse/native.js';
import { DirentReply, ENTRY, entryBuffer, FI_BITS, FILE_INFO, SIZEOF, STAT, statBuffer, typeBits } from '../../src/fs/fuse/structs.js';

const C = `
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#define P(name, value) printf("%s %zu\\n", name, (size_t)(value))
int main(void) {
  P("sizeof.ops", sizeof(struct fuse_lowlevel_ops));
  P("sizeof.stat", sizeof(struct stat));
  P("sizeof.entry", sizeof(struct fuse_entry_param));
  P("sizeof.fileInfo", sizeof(struct fuse_file_info));
  P("sizeof.statvfs", sizeof(struct statvfs));
  P("stat.ino", offsetof(struct stat, st_ino)); P("stat.nlink", offsetof(struct stat, st_nlink));
  P("stat.mode", offsetof(struct stat, st_mode)); P("stat.uid", offsetof(struct stat, st_uid));
  P("stat.gid", offsetof(struct stat, st_gid)); P("stat.size", offsetof(struct stat, st_size));
  P("stat.blksize", offsetof(struct stat, st_blksize)); P("stat.blocks", offsetof(struct stat, st_blocks));
  P("stat.atim", offsetof(struct stat, st_atim)); P("stat.mtim", offsetof(struct stat, st_mtim)); P("stat.ctim", offsetof(struct stat, st_ctim));
  P("entry.ino", offsetof(struct fuse_entry_param, ino)); P("entry.generation", offsetof(struct fuse_entry_param, generation));
  P("entry.attr", offsetof(struct fuse_entry_param, attr)); P("entry.attrTimeout", offsetof(struct fuse_entry_param, attr_timeout));
  P("entry.entryTimeout", offsetof(struct fuse_entry_param, entry_timeout));
  P("fi.flags", offsetof(struct fuse_file_info, flags)); P("fi.fh", offsetof(struct fuse_file_info, fh));
  { struct fuse_file_info f; memset(&f, 0, sizeof f); f.direct_io = 1; P("fi.directIoBits", ((unsigned *)&f)[1]); }
  { struct fuse_file_info f; memset(&f, 0, sizeof f); f.keep_cache = 1; P("fi.keepCacheBits", ((unsigned *)&f)[1]); }
  P("conn.max_write", offsetof(struct fuse_conn_info, max_write)); P("conn.max_readahead", offsetof(struct fuse_conn_info, max_readahead));
  P("ctx.uid", offsetof(struct fuse_ctx, uid)); P("ctx.gid", offsetof(struct fuse_ctx, gid)); P("ctx.pid", offsetof(struct fuse_ctx, pid));
  P("ops.init", offsetof(struct fuse_lowlevel_ops, init)); P("ops.create", offsetof(struct fuse_lowlevel_ops, create));
  P("ops.readdir", offsetof(struct fuse_lowlevel_ops, readdir)); P("ops.lseek", offsetof(struct fuse_lowlevel_ops, lseek));
  P("statvfs.blocks", offsetof(struct statvfs, f_blocks)); P("statvfs.namemax", offsetof(struct statvfs, f_namemax));
  return 0;
}
`;

describe('fuse: struct layouts match the libfuse3 headers', () => {
  it('every offset and size used by src/fs/fuse', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-layout-'));
    try {
      writeFileSync(path.join(dir, 'layout.c'), C);
      // Fails loudly if the headers are missing: scripts/install.sh --test installs libfuse3-dev and gcc.
      execFileSync('gcc', ['-I/usr/include/fuse3', '-o', path.join(dir, 'layout'), path.join(dir, 'layout.c')]);
      const out = execFileSync(path.join(dir, 'layout'), { encoding: 'utf8' });
      const c = Object.fromEntries(out.trim().split('\n').map((l) => [l.split(' ')[0], Number(l.split(' ')[1])]));
      expect(c['sizeof.ops']).toBe(OPS_SIZE);
      expect(c['sizeof.stat']).toBe(SIZEOF.stat);
      expect(c['sizeof.entry']).toBe(SIZEOF.entry);
      expect(c['sizeof.fileInfo']).toBe(SIZEOF.fileInfo);
      expect(c['sizeof.statvfs']).toBe(SIZEOF.statvfs);
      for (const [k, v] of Object.entries(STAT)) expect(c[`stat.${k}`], `stat.${k}`).toBe(v);
      for (const [k, v] of Object.entries(ENTRY)) expect(c[`entry.${k}`], `entry.${k}`).toBe(v);
      expect(c['fi.flags']).toBe(FILE_INFO.flags);
      expect(c['fi.fh']).toBe(FILE_INFO.fh);
      expect(c['fi.directIoBits']).toBe(FI_BITS.directIo);
      expect(c['fi.keepCacheBits']).toBe(FI_BITS.keepCache);
      // Offsets written or read by session.ts and native.ts directly.
      expect(c['conn.max_write']).toBe(8);
      expect(c['conn.max_readahead']).toBe(16);
      expect([c['ctx.uid'], c['ctx.gid'], c['ctx.pid']]).toEqual([0, 4, 8]);
      expect(c['ops.init']).toBe(OP_NAMES.indexOf('init') * 8);
      expect(c['ops.create']).toBe(OP_NAMES.indexOf('create') * 8);
      expect(c['ops.readdir']).toBe(OP_NAMES.indexOf('readdir') * 8);
      expect(c['ops.lseek']).toBe(OP_NAMES.indexOf('lseek') * 8);
      expect([c['statvfs.blocks'], c['statvfs.namemax']]).toEqual([16, 80]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('fuse: readdir replies are encoded as libfuse encodes them', () => {
  const file = (over: Partial<FileInfo>): FileInfo => ({ kind: 'file', size: 4096, mode: 0o644, uid: 1000, gid: 1000, mtimeMs: 1_700_000_000_123.456, ...over }) as FileInfo;
  // Names of 1 to 9 bytes around the 8-byte padding, multi-byte UTF-8, large numbers, times before 1970.
  const entries: { name: string; ino: number; info?: FileInfo; timeout?: number }[] = [
    { name: '.', ino: 1 },
    { name: '..', ino: 1 },
    { name: 'a', ino: 2, info: file({}), timeout: 1 },
    { name: 'abcdefgh', ino: 3, info: file({ kind: 'dir', size: 0, mode: 0o755 }), timeout: 0.25 },
    { name: 'abcdefghi', ino: 2 ** 40 + 7, info: file({ size: 2 ** 45 + 3, mtimeMs: -1_500.25 }), timeout: 3600 },
    { name: 'grün ü 日本', ino: 5, info: file({ kind: 'symlink', size: 12, mode: 0o777, uid: 0, gid: 0 }), timeout: 0 },
    { name: 'no attributes yet', ino: 6 },
    { name: 'x'.repeat(255), ino: 7, info: file({ mtimeMs: 0 }), timeout: 1.5 },
  ];

  for (const plus of [false, true]) {
    it(plus ? 'READDIRPLUS' : 'READDIR', () => {
      const lib = loadFuse();
      // Replies share one buffer: a full one made before must leave no byte of its own in the next.
      const before = new DirentReply(8192, true);
      for (let i = 0, bytes = 0; (bytes = before.room(`earlier-${i}`)) >= 0; i++) before.add(`earlier-${i}`, bytes, 0xffffffff, 0o100777, 0xffffffff, { info: entries[2]!.info!, timeout: 1e9 });
      const reply = new DirentReply(8192, plus);
      const theirs = Buffer.alloc(8192);
      let used = 0;
      entries.forEach((e, i) => {
        const mode = e.info ? typeBits(e.info) : 0o040000;
        const bytes = reply.room(e.name);
        reply.add(e.name, bytes, e.ino, mode, i + 1, plus && e.info ? { info: e.info, timeout: e.timeout! } : undefined);
        let param: Buffer;
        if (!plus) param = e.info ? statBuffer(e.ino, e.info) : Buffer.alloc(SIZEOF.stat);
        else param = e.info ? entryBuffer(e.ino, e.info, e.timeout!) : Buffer.alloc(SIZEOF.entry);
        const statAt = plus ? ENTRY.attr : 0;
        if (!e.info) {
          param.writeBigUInt64LE(BigInt(e.ino), statAt + STAT.ino);
          param.writeUInt32LE(mode, statAt + STAT.mode);
        }
        const add = plus ? lib.addDirentryPlus : lib.addDirentry;
        used += Number(add(null, theirs.subarray(used), theirs.length - used, e.name, param, i + 1));
        expect(reply.used, e.name).toBe(used);
      });
      expect(reply.buf.subarray(0, reply.used).equals(theirs.subarray(0, used))).toBe(true);
      // And an entry that does not fit is refused whole.
      const small = new DirentReply(plus ? 160 : 32, plus);
      expect(small.room('12345678')).toBe(8);
      small.add('12345678', 8, 9, 0o100000, 1);
      expect(small.room('a')).toBe(-1);
    });
  }
});
