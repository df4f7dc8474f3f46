/** A listing page by page: which names the pages so far decide (S3's byte order), and which must wait for the end. */
import { describe, expect, it } from 'vitest';
import { PagedListing } from '../../src/fs/mirror/paged-listing.js';

const obj = (key: string) => ({ key, size: key.length, etag: `e-${key}`, lastModified: new Date(5) });

describe('paged listing', () => {
  it('a name is decided once the pages are past its directory form (name/): its directory, else its file, else absent', () => {
    const changed = new Set<string>();
    const p = new PagedListing('d/', 7, (n) => changed.has(n));
    p.add({ objects: [obj('d/'), obj('d/a'), obj('d/b')], prefixes: ['d/b/'] });
    expect(p.decide('a')).toMatchObject({ name: 'a', kind: 'file', size: 3, etag: 'e-d/a' });
    expect(p.decide('b')).toMatchObject({ name: 'b', kind: 'dir', modifiedMs: 7 }); // a directory shadows the file
    expect(p.decide('a0')).toBe('absent');
    expect(p.decide('')).toBe('absent');
    // 'b-1' sorts before 'b/' but 'b/' was reached; 'c' and 'b0' were not ('0' sorts after '/').
    expect(p.decide('b-1')).toBe('absent');
    expect(p.decide('b0')).toBeUndefined();
    expect(p.decide('c')).toBeUndefined();
    // A file whose directory form the page has not reached yet ('e' was the last key: 'e/' may come next).
    p.add({ objects: [obj('d/e')], prefixes: [] });
    expect(p.decide('e')).toBeUndefined();
    p.add({ objects: [obj('d/e0')], prefixes: [] });
    expect(p.decide('e')).toMatchObject({ kind: 'file' });
    expect(p.fileNames).toEqual(['a', 'b', 'e', 'e0']);
    // Changed through the mount while the listing came: only the whole listing (which replays it) says.
    changed.add('a');
    expect(p.decide('a')).toBeUndefined();
  });

  it('names outside ASCII wait for the whole listing (UTF-8 and JavaScript order differ past U+FFFF)', () => {
    const p = new PagedListing('', 0, () => false);
    p.add({ objects: [obj('é'), obj('\u{1F600}')], prefixes: [] });
    expect(p.decide('é')).toBeUndefined();
    expect(p.decide('a')).toBe('absent'); // ASCII: ordered the same either way
  });

  it('a waiting look-up resolves when a page passes its name', async () => {
    const p = new PagedListing('', 0, () => false);
    let got: unknown;
    void p.decided('m').then((d) => (got = d));
    p.add({ objects: [obj('a')], prefixes: [] });
    await Promise.resolve();
    expect(got).toBeUndefined();
    p.add({ objects: [obj('m'), obj('z')], prefixes: [] });
    await Promise.resolve();
    expect(got).toMatchObject({ name: 'm', kind: 'file' });
  });
});
