import { describe, expect, it } from 'vitest';
import { printable } from '../../src/cli/printable.js';

describe('printable: a key on one line', () => {
  it('escapes control characters and backslashes as ls -b does, and leaves the rest alone', () => {
    expect(printable('a\nb\tc\rd\\e')).toBe('a\\nb\\tc\\rd\\\\e');
    expect(printable('bell\x07 esc\x1b[31m del\x7f')).toBe('bell\\x07 esc\\x1b[31m del\\x7f');
    expect(printable('sp ace ü日本 100%.txt')).toBe('sp ace ü日本 100%.txt');
  });
});
