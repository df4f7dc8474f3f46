/**
 * Give the disk space of a byte range of a data file back without changing its size (fallocate
 * PUNCH_HOLE | KEEP_SIZE, through koffi: Node has no binding). Reads of the range return zeros afterwards.
 * Returns false where the filesystem cannot punch holes; the caller then keeps the bytes.
 */
import koffi from 'koffi';

const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;

let fallocate: ((fd: number, mode: number, offset: number, len: number) => number) | null | undefined;

function load(): typeof fallocate {
  if (fallocate !== undefined) return fallocate;
  try {
    const libc = koffi.load('libc.so.6');
    fallocate = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as unknown as typeof fallocate;
  } catch {
    fallocate = null;
  }
  return fallocate;
}

export function punchHole(fd: number, offset: number, length: number): boolean {
  const fn = load();
  if (!fn || length <= 0) return false;
  return fn(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) === 0;
}

let lseek: ((fd: number, offset: number, whence: number) => number | bigint) | null | undefined;
const SEEK_DATA = 3;

/**
 * The first offset at or after `offset` where the data file holds data (SEEK_DATA), or null when only a hole
 * follows. Where the filesystem cannot tell, everything counts as data.
 */
export function nextData(fd: number, offset: number): number | null {
  if (lseek === undefined) {
    try {
      lseek = koffi.load('libc.so.6').func('int64_t lseek(int fd, int64_t offset, int whence)') as unknown as typeof lseek;
    } catch {
      lseek = null;
    }
  }
  if (!lseek) return offset;
  const at = Number(lseek(fd, offset, SEEK_DATA));
  return at < 0 ? null : at; // ENXIO: no data after offset
}
