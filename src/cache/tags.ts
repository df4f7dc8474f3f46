/**
 * Tag rules (CBCache R43): ids 0x0001–0xCFFF, values of 1–65531 bytes, at most 53247 tags per file.
 * Violations are VaultErrors that say which limit was crossed; the vault stores valid tags transactionally.
 */
import { TAG } from './constants.js';
import { VaultError } from './errors.js';

const hex = (n: number): string => `0x${n.toString(16).toUpperCase().padStart(4, '0')}`;

export function checkTag(id: number, value?: Buffer): void {
  if (!Number.isInteger(id) || id < TAG.MIN_ID || id > TAG.MAX_ID) {
    throw new VaultError('INVALID', `tag id ${Number.isInteger(id) ? hex(id) : String(id)} is out of range (${hex(TAG.MIN_ID)}–${hex(TAG.MAX_ID)})`);
  }
  if (value !== undefined && (value.length < TAG.MIN_SIZE || value.length > TAG.MAX_SIZE)) {
    throw new VaultError('INVALID', `tag ${hex(id)} value has ${value.length} bytes; a tag holds ${TAG.MIN_SIZE}–${TAG.MAX_SIZE} bytes`);
  }
}

export function checkTagCount(count: number): void {
  if (count > TAG.MAX_COUNT) throw new VaultError('INVALID', `a file holds at most ${TAG.MAX_COUNT} tags`);
}
