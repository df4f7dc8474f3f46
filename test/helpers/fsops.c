/* Filesystem calls the shell has no tool for (coreutils 9.1), for the POSIX tests:
 *   fsops exchange A B      renameat2(RENAME_EXCHANGE)
 *   fsops noreplace A B     renameat2(RENAME_NOREPLACE)
 *   fsops seek FILE OFF     prints "data=<SEEK_DATA> hole=<SEEK_HOLE>" from OFF (-1 for ENXIO)
 *   fsops punch FILE OFF LEN  fallocate(PUNCH_HOLE|KEEP_SIZE)
 * Exit 0 on success; on failure prints strerror and exits with errno. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/fs.h>

static int fail(const char *what) {
  int e = errno;
  fprintf(stderr, "%s: %s\n", what, strerror(e));
  return e ? e : 1;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  if (!strcmp(argv[1], "exchange") || !strcmp(argv[1], "noreplace")) {
    unsigned flags = !strcmp(argv[1], "exchange") ? RENAME_EXCHANGE : RENAME_NOREPLACE;
    if (renameat2(AT_FDCWD, argv[2], AT_FDCWD, argv[3], flags) != 0) return fail("renameat2");
    return 0;
  }
  int fd = open(argv[2], !strcmp(argv[1], "punch") ? O_RDWR : O_RDONLY);
  if (fd < 0) return fail("open");
  if (!strcmp(argv[1], "seek")) {
    off_t off = atoll(argv[3]);
    off_t d = lseek(fd, off, SEEK_DATA);
    off_t h = lseek(fd, off, SEEK_HOLE);
    printf("data=%lld hole=%lld\n", (long long)d, (long long)h);
    return 0;
  }
  if (!strcmp(argv[1], "punch")) {
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, atoll(argv[3]), atoll(argv[4])) != 0) return fail("fallocate");
    return 0;
  }
  return 2;
}
