/* A file-data exerciser in the spirit of fsx: random operations on one file, each checked against a copy of what
 * the file must hold, kept in memory. It covers what the shell tools and the model test do not reach: writes and
 * reads at unaligned offsets across the vault's blocks, appends through a second descriptor (O_APPEND), reads by a
 * descriptor opened afresh, writes and reads through mmap, truncates, fallocate (grow, keep size, punch hole, zero
 * range), copy_file_range inside the file, fsync, dropped page caches and reopens. With a pause (see below) the file is closed long enough for its upload to run, so later operations meet
 * a file being uploaded, uploaded, or evicted from the vault and read back from S3.
 *
 *   fsx [-e EXPECTED] [-i INITIAL] [-k] [-r] [-v] FILE SEED OPS [MAXLEN [PAUSE_MS]]
 *     → "ok OPS ops, size N", exit 0; with -e, the bytes the file must hold are written to EXPECTED at the end
 *       (a local path: the test compares it with the object after a remount);
 *     → on a mismatch or a failed call, the last operations and the first bad byte, exit 1.
 *   MAXLEN: the largest the file gets (default 4 MiB); PAUSE_MS: how long some reopens wait, file closed (0).
 *   -i: FILE exists and holds INITIAL's bytes (at most MAXLEN): start from them instead of an empty file.
 *   -k: end with fsync instead of close, print the result, and wait to be killed with the file still open.
 *   -r: half the reopens rename the file away (to FILE.mv) and back instead, open or closed.
 *   -v: print each operation to stderr as it starts (the whole sequence of a seed: run it on a local disk).
 *
 * Every operation has a bounded size, so a run's time is bounded by OPS; the test that runs it adds a timeout. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

static const char *file;
static int fd = -1;  /* the file, read and written */
static int afd = -1; /* the same file opened O_APPEND beside it */
static unsigned char *good; /* what the file must hold */
static unsigned char *buf;  /* scratch for reads and new data */
static long size;           /* what its size must be */
static long maxlen;
static long pause_ms;
static uint64_t rng_state;
static long opno;
static int zero_range_ok = 1, punch_ok = 1;
static int renames;         /* -r: some reopens rename the file away and back instead */
static int verbose;         /* -v: every operation to stderr as it starts */

#define LOG_N 32
static char oplog[LOG_N][128];

static uint64_t rnd(void) {
  /* xorshift64*: the same sequence for a seed on every machine */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}
static long below(long n) { return n > 0 ? (long)(rnd() % (uint64_t)n) : 0; }

static void note(const char *fmt, ...) {
  snprintf(oplog[opno % LOG_N], sizeof oplog[0], "%ld ", opno);
  size_t used = strlen(oplog[opno % LOG_N]);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(oplog[opno % LOG_N] + used, sizeof oplog[0] - used, fmt, ap);
  va_end(ap);
  if (verbose) fprintf(stderr, "%s\n", oplog[opno % LOG_N]);
}

static void dump_and_fail(const char *fmt, long a, long b, long c) {
  fprintf(stdout, "FAIL at op %ld (seed state %llu): ", opno, (unsigned long long)rng_state);
  fprintf(stdout, fmt, a, b, c);
  fprintf(stdout, "\nlast operations:\n");
  for (long i = opno - LOG_N + 1; i <= opno; i++)
    if (i >= 0) fprintf(stdout, "  %s\n", oplog[i % LOG_N]);
  fflush(stdout);
  exit(1);
}

static void sys_fail(const char *what, long a, long b) {
  int e = errno;
  char m[160];
  snprintf(m, sizeof m, "%s(%%ld, %%ld): %s (errno %d)%%.0ld", what, strerror(e), e);
  dump_and_fail(m, a, b, 0);
}

static void fill_random(unsigned char *p, long n) {
  /* Bytes that tell the op apart: a run of the op number's low byte would hide a shifted write. */
  for (long i = 0; i < n; i++) p[i] = (unsigned char)(rnd() >> 56);
}

static void check(const unsigned char *got, long off, long n, const char *how) {
  for (long i = 0; i < n; i++)
    if (got[i] != good[off + i]) {
      char m[160];
      snprintf(m, sizeof m, "%s: byte %%ld is 0x%%02lx, expected 0x%%02lx", how);
      dump_and_fail(m, off + i, got[i], good[off + i]);
    }
}

static void do_open(int trunc) {
  fd = open(file, O_RDWR | O_CREAT | (trunc ? O_TRUNC : 0), 0644);
  if (fd < 0) sys_fail("open", trunc, 0);
  if (trunc) size = 0;
  afd = open(file, O_WRONLY | O_APPEND);
  if (afd < 0) sys_fail("open O_APPEND", 0, 0);
}

/* pread [off, off+len) through rfd: the bytes up to the file's end must be there, and be what it holds. */
static void read_and_check(int rfd, long off, long len, const char *how) {
  long want = off >= size ? 0 : (off + len > size ? size - off : len), done = 0;
  while (done < len) {
    ssize_t r = pread(rfd, buf + done, len - done, off + done);
    if (r < 0) sys_fail("pread", off + done, len - done);
    if (r == 0) break;
    done += r;
  }
  if (done != want) {
    char m[160];
    snprintf(m, sizeof m, "%s at %%ld returned %%ld bytes, expected %%ld", how);
    dump_and_fail(m, off, done, want);
  }
  check(buf, off, done, how);
}

static void op_append(void) {
  long len = 1 + below(rnd() % 4 ? 16384 : 262144);
  if (size + len > maxlen) return;
  note("append +%ld at %ld", len, size);
  fill_random(buf, len);
  ssize_t w = write(afd, buf, len);
  if (w != len) sys_fail("append", len, w);
  memcpy(good + size, buf, len);
  size += len;
}

/* A reader that opens the file afresh: what another process would see. */
static void op_fresh_read(void) {
  long off = below(size + 1), len = 1 + below(262144);
  if (off + len > maxlen) len = maxlen - off;
  if (len <= 0) return;
  note("fresh open, read %ld +%ld", off, len);
  int rfd = open(file, O_RDONLY);
  if (rfd < 0) sys_fail("open for reading", off, len);
  read_and_check(rfd, off, len, "fresh read");
  close(rfd);
}

static void op_write(void) {
  long off = below(maxlen), len = 1 + below(rnd() % 4 ? 65536 : 1 << 20);
  if (off + len > maxlen) len = maxlen - off;
  note("write %ld +%ld", off, len);
  fill_random(buf, len);
  for (long done = 0; done < len;) {
    ssize_t w = pwrite(fd, buf + done, len - done, off + done);
    if (w <= 0) sys_fail("pwrite", off + done, len - done);
    done += w;
  }
  if (off > size) memset(good + size, 0, off - size);
  memcpy(good + off, buf, len);
  if (off + len > size) size = off + len;
}

static void op_read(void) {
  long off = below(size + 4096), len = 1 + below(rnd() % 4 ? 65536 : 1 << 20);
  if (off + len > maxlen) len = maxlen - off;
  if (len <= 0) return;
  note("read %ld +%ld", off, len);
  read_and_check(fd, off, len, "read");
}

static void op_mapread(void) {
  if (size == 0) return;
  long off = below(size), len = 1 + below(rnd() % 4 ? 65536 : 1 << 20);
  if (off + len > size) len = size - off;
  note("mapread %ld +%ld", off, len);
  long pg = off & ~4095L;
  unsigned char *p = mmap(NULL, len + (off - pg), PROT_READ, MAP_SHARED, fd, pg);
  if (p == MAP_FAILED) sys_fail("mmap read", off, len);
  check(p + (off - pg), off, len, "mapread");
  munmap(p, len + (off - pg));
}

static void op_mapwrite(void) {
  long off = below(maxlen), len = 1 + below(65536);
  if (off + len > maxlen) len = maxlen - off;
  note("mapwrite %ld +%ld", off, len);
  if (off + len > size) {
    /* A mapping cannot grow the file: extend it first, as fsx does. */
    if (ftruncate(fd, off + len) != 0) sys_fail("ftruncate before mapwrite", off + len, 0);
    memset(good + size, 0, off + len - size);
    size = off + len;
  }
  long pg = off & ~4095L;
  unsigned char *p = mmap(NULL, len + (off - pg), PROT_READ | PROT_WRITE, MAP_SHARED, fd, pg);
  if (p == MAP_FAILED) sys_fail("mmap write", off, len);
  fill_random(buf, len);
  memcpy(p + (off - pg), buf, len);
  memcpy(good + off, buf, len);
  if (rnd() % 2 && msync(p, len + (off - pg), MS_SYNC) != 0) sys_fail("msync", off, len);
  munmap(p, len + (off - pg));
}

static void op_truncate(void) {
  long to = rnd() % 4 ? below(maxlen) : below(size + 1);
  note("truncate %ld (was %ld)", to, size);
  if (ftruncate(fd, to) != 0) sys_fail("ftruncate", to, 0);
  if (to > size) memset(good + size, 0, to - size);
  size = to;
}

static void op_fallocate(void) {
  long off = below(maxlen), len = 1 + below(1 << 20);
  if (off + len > maxlen) len = maxlen - off;
  int kind = (int)below(4);
  if (kind == 2 && !punch_ok) kind = 0;
  if (kind == 3 && !zero_range_ok) kind = 1;
  int mode = kind == 0 ? 0 : kind == 1 ? FALLOC_FL_KEEP_SIZE : kind == 2 ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                                                         : FALLOC_FL_ZERO_RANGE | (rnd() % 2 ? FALLOC_FL_KEEP_SIZE : 0);
  note("fallocate mode %ld at %ld +%ld", (long)mode, off, len);
  if (fallocate(fd, mode, off, len) != 0) {
    if (errno == EOPNOTSUPP && kind == 2) { punch_ok = 0; return; }
    if (errno == EOPNOTSUPP && kind == 3) { zero_range_ok = 0; return; }
    sys_fail("fallocate", off, len);
  }
  long end = off + len;
  if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
    long stop = (mode & FALLOC_FL_KEEP_SIZE) && end > size ? size : end;
    if (stop > off) memset(good + off, 0, stop - off);
  }
  if (!(mode & FALLOC_FL_KEEP_SIZE) && end > size) {
    memset(good + size, 0, (off > size ? off : size) - size);
    if (!(mode & FALLOC_FL_ZERO_RANGE)) memset(good + (off > size ? off : size), 0, end - (off > size ? off : size));
    size = end;
  }
}

static void op_copy_range(void) {
  if (size < 2) return;
  long len = 1 + below(size / 2 < 262144 ? size / 2 : 262144);
  long from = below(size - len + 1), to = below(maxlen - len);
  if (to < from + len && from < to + len) return; /* ranges of one file must not overlap */
  note("copy_file_range %ld -> %ld +%ld", from, to, len);
  loff_t in = from, out = to;
  long done = 0;
  while (done < len) {
    ssize_t c = copy_file_range(fd, &in, fd, &out, len - done, 0);
    if (c < 0) sys_fail("copy_file_range", from, to);
    if (c == 0) break;
    done += c;
  }
  if (done != len) dump_and_fail("copy_file_range copied %ld of %ld%.0ld", done, len, 0);
  if (to > size) memset(good + size, 0, to - size);
  memmove(good + to, good + from, len);
  if (to + len > size) size = to + len;
}

static void op_stat(void) {
  struct stat st;
  note("stat%.0ld%.0ld", 0, 0);
  if (fstat(fd, &st) != 0) sys_fail("fstat", 0, 0);
  if (st.st_size != size) dump_and_fail("fstat size %ld, expected %ld%.0ld", (long)st.st_size, size, 0);
  if (stat(file, &st) != 0) sys_fail("stat", 0, 0);
  if (st.st_size != size) dump_and_fail("stat size %ld, expected %ld%.0ld", (long)st.st_size, size, 0);
}

static void op_sync(void) {
  int data = rnd() % 2;
  note(data ? "fdatasync%.0ld%.0ld" : "fsync%.0ld%.0ld", 0, 0);
  if ((data ? fdatasync(fd) : fsync(fd)) != 0) sys_fail("fsync", data, 0);
}

static void op_drop_cache(void) {
  note("drop page cache%.0ld%.0ld", 0, 0);
  if (fdatasync(fd) != 0) sys_fail("fdatasync before drop", 0, 0);
  if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0) sys_fail("fadvise", 0, 0);
}

static void sleep_ms(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

/* Rename the file away and back: open (its descriptors go on with it, and one write lands under the other name), or
 * closed (with the pause under the other name, its upload due meanwhile). Only with -r: without it, no rnd() is
 * drawn here, so the sequences of seeds run before -r existed stay the same. */
static void op_rename(void) {
  char away[4096];
  snprintf(away, sizeof away, "%s.mv", file);
  int open_file = rnd() % 2;
  long wait = pause_ms > 0 && rnd() % 2 ? pause_ms : 0;
  long off = below(size + 1), len = 1 + below(4096);
  if (off + len > maxlen) off = maxlen - len;
  note(open_file ? "rename away and back, open, %ld ms, write at %ld +%ld" : "close, rename away, %ld ms, back, reopen", wait, off, len);
  if (!open_file && (close(afd) != 0 || close(fd) != 0)) sys_fail("close", 0, 0);
  if (rename(file, away) != 0) sys_fail("rename away", 0, 0);
  if (open_file) {
    fill_random(buf, len);
    if (pwrite(fd, buf, len, off) != len) sys_fail("pwrite under the other name", off, len);
    memcpy(good + off, buf, len);
    if (off + len > size) size = off + len;
  }
  if (wait) sleep_ms(wait);
  if (rename(away, file) != 0) sys_fail("rename back", 0, 0);
  if (!open_file) do_open(0);
}

static void op_reopen(void) {
  if (renames && rnd() % 2) {
    op_rename();
    return;
  }
  int trunc = rnd() % 16 == 0;
  long wait = pause_ms > 0 && rnd() % 3 == 0 ? pause_ms : 0;
  note(trunc ? "close, %ld ms, reopen O_TRUNC%.0ld" : "close, %ld ms, reopen%.0ld", wait, 0);
  if (close(afd) != 0) sys_fail("close O_APPEND", 0, 0);
  if (close(fd) != 0) sys_fail("close", 0, 0);
  if (wait) sleep_ms(wait);
  do_open(trunc);
}

static void final_check(void) {
  long done = 0;
  while (done < size) {
    ssize_t r = pread(fd, buf, size - done < (1 << 20) ? size - done : 1 << 20, done);
    if (r <= 0) sys_fail("final pread", done, r);
    check(buf, done, r, "final read");
    done += r;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) sys_fail("fstat", 0, 0);
  if (st.st_size != size) dump_and_fail("final size %ld, expected %ld%.0ld", (long)st.st_size, size, 0);
}

int main(int argc, char **argv) {
  const char *expected = NULL, *initial = NULL;
  int a = 1, hold = 0;
  for (;;) {
    if (a + 1 < argc && !strcmp(argv[a], "-e")) { expected = argv[a + 1]; a += 2; }
    else if (a + 1 < argc && !strcmp(argv[a], "-i")) { initial = argv[a + 1]; a += 2; }
    else if (a < argc && !strcmp(argv[a], "-k")) { hold = 1; a += 1; }
    else if (a < argc && !strcmp(argv[a], "-r")) { renames = 1; a += 1; }
    else if (a < argc && !strcmp(argv[a], "-v")) { verbose = 1; a += 1; }
    else break;
  }
  if (argc - a < 3) {
    fprintf(stderr, "usage: fsx [-e EXPECTED] [-i INITIAL] [-k] [-r] [-v] FILE SEED OPS [MAXLEN [PAUSE_MS]]\n");
    return 2;
  }
  file = argv[a];
  rng_state = strtoull(argv[a + 1], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
  long ops = atol(argv[a + 2]);
  maxlen = argc - a > 3 ? atol(argv[a + 3]) : 4L << 20;
  pause_ms = argc - a > 4 ? atol(argv[a + 4]) : 0;
  good = calloc(maxlen, 1);
  buf = malloc(maxlen > (1 << 20) ? maxlen : 1 << 20);
  if (!good || !buf) return 2;
  if (initial) {
    /* FILE exists and holds these bytes (an object the mount has not read yet): start from them. */
    int i = open(initial, O_RDONLY);
    if (i < 0) { perror(initial); return 2; }
    ssize_t n = read(i, good, maxlen);
    close(i);
    if (n < 0) { perror(initial); return 2; }
    size = n;
  } else
    unlink(file);
  do_open(0);
  for (opno = 0; opno < ops; opno++) {
    long r = below(100);
    if (r < 18) op_write();
    else if (r < 22) op_append();
    else if (r < 34) op_read();
    else if (r < 38) op_fresh_read();
    else if (r < 46) op_mapread();
    else if (r < 54) op_mapwrite();
    else if (r < 60) op_truncate();
    else if (r < 68) op_fallocate();
    else if (r < 74) op_copy_range();
    else if (r < 82) op_stat();
    else if (r < 86) op_sync();
    else if (r < 91) op_drop_cache();
    else op_reopen();
  }
  final_check();
  if (hold) {
    if (fsync(fd) != 0) sys_fail("last fsync", 0, 0);
  } else if (close(afd) != 0 || close(fd) != 0) sys_fail("last close", 0, 0);
  if (expected) {
    int e = open(expected, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (e < 0 || write(e, good, size) != size || close(e) != 0) { perror(expected); return 2; }
  }
  printf("ok %ld ops, size %ld%s%s\n", ops, size, punch_ok ? "" : " (no punch hole)", zero_range_ok ? "" : " (no zero range)");
  fflush(stdout);
  if (hold)
    for (;;) pause(); /* the file stays open: the caller kills s3vault, then this */
  return 0;
}
