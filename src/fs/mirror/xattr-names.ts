/**
 * Extended-attribute names under which the vault's tags (R43) appear: `user.s3vault.tag.XXXX`, XXXX the tag id
 * in hex (0001–CFFF). Tags C000–CFFF are s3vault's own (C001: the object's ETag, C002: its version id).
 * `user.s3vault.etag` is read-only: the ETag of the object the cached copy is based on.
 */
export const TAG_PREFIX = 'user.s3vault.tag.';
export const ETAG_XATTR = 'user.s3vault.etag';

export function tagName(id: number): string {
  return `${TAG_PREFIX}${id.toString(16).padStart(4, '0')}`;
}

/** The tag id an attribute name denotes, or undefined if it is not a tag name. Range checks are the vault's. */
export function parseTagName(name: string): number | undefined {
  if (!name.startsWith(TAG_PREFIX)) return undefined;
  const hex = name.slice(TAG_PREFIX.length);
  return /^[0-9a-fA-F]{1,4}$/.test(hex) ? parseInt(hex, 16) : undefined;
}
