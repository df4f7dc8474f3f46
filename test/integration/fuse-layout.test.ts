/**
 * A wrong struct offset corrupts memory silently (spec/fuse-binding.md): check every offset and size the
 * binding uses against the real libfuse3 headers, with a C program compiled here.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OP_NAMES, OPS_SIZE } from '../../src/fs/fuse/native.js';
import { ENTRY, FI_BITS, FILE_INFO, SIZEOF, STAT } from '../../src/fs/fuse/structs.js';

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
