import { describe, expect, it } from 'vitest';
import { InodeTable, ROOT_INO } from '../../src/fs/fuse/inodes.js';

describe('InodeTable', () => {
  it('keeps a number for a path while its object keeps its kind', () => {
    const t = new InodeTable();
    const a = t.lookup('/a', 'file');
    expect(t.lookup('/a', 'file')).toBe(a);
    expect(t.lookup('/a')).toBe(a);
    expect(t.path(a)).toBe('/a');
  });

  it('gives a path a new number when its object is of another kind, and the old number no path', () => {
    // A look-up answered before an unlink and registered after it re-adds the file's path; a mkdir of that name
    // must not hand the kernel the file's number (the kernel marks an inode whose type changes bad: EIO).
    const t = new InodeTable();
    const file = t.lookup('/a', 'file');
    const dir = t.lookup('/a', 'dir');
    expect(dir).not.toBe(file);
    expect(t.removed(file)).toBe(true);
    expect(t.path(dir)).toBe('/a');
    expect(t.sameKind(file, 'file')).toBe(true);
    expect(t.sameKind(dir, 'file')).toBe(false);
  });

  it('detaches a number from its path only while the path still has it', () => {
    const t = new InodeTable();
    const a = t.lookup('/a', 'file');
    t.rename('/a', '/b');
    const a2 = t.lookup('/a', 'dir');
    t.detach(a);
    expect(t.removed(a)).toBe(true);
    expect(t.path(a2)).toBe('/a');
    expect(t.lookup('/b', 'file')).not.toBe(a);
  });

  it('never detaches the root', () => {
    const t = new InodeTable();
    expect(t.sameKind(ROOT_INO, 'dir')).toBe(true);
    expect(t.lookup('/', 'dir')).toBe(ROOT_INO);
  });
});
