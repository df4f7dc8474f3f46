/**
 * CBCache constants, with the seed's names and values (spec/seed-inventory.md R49–R55).
 * The API in vault.ts takes and returns these.
 */

/** What closing a file or the vault does about unflushed data (R49). */
export const FLUSH = { DELAYED: 0, NONE: 1, IMMEDIATE: 2 } as const;
/** What closing does about cached data (R49). */
export const PURGE = { DELAYED: 0, NONE: 1, IMMEDIATE: 2 } as const;
/** How a flush call runs (R50). */
export const FLUSH_MODE = { SYNC: 0, ASYNC: 1, TEST: 2 } as const;
/** What a flush call found or did (R50). */
export const FLUSH_RESULT = { NOTHING: 0, DIRTY: 1, RUNNING: 2, SUCCESS: 3 } as const;
/** EnumerateCachedFiles modes; the nonzero ones are flags and combine (R54). */
export const ENUM_MODE = { ALL: 0, CHANGED: 1, UNCHANGED: 2, LOCAL: 4, ORPHAN: 8, PINNED: 16 } as const;
/** Per-file status kinds (R54). */
export const FILE_STATUS = { CHANGED: 1, UNCHANGED: 2, LOCAL: 3, ORPHAN: 4, OPEN: 5 } as const;
/** How much of a file to prefetch (R51). */
export const PREFETCH = { NOTHING: 0, ALL: -1 } as const;
/** CheckAndRepair flags (R55). */
export const CACHE_CHECK = { NO_RECREATE: 0, RECREATE_VAULT: 1 } as const;

/**
 * Tags s3vault keeps for itself (ids C000–CFFF are reserved for it): the object's ETag and version id, when an
 * upload whose outcome is unknown began, and a stream upload's multipart upload id (aborted after a crash).
 */
export const OWN_TAG = { ETAG: 0xc001, VERSION_ID: 0xc002, ATTEMPT: 0xc003, STREAM: 0xc004 } as const;

/** Tag limits (R43). */
export const TAG = { MIN_ID: 0x0001, MAX_ID: 0xcfff, MIN_SIZE: 1, MAX_SIZE: 65531, MAX_COUNT: 53247 } as const;

export type FlushAction = (typeof FLUSH)[keyof typeof FLUSH];
export type PurgeAction = (typeof PURGE)[keyof typeof PURGE];
export type FlushMode = (typeof FLUSH_MODE)[keyof typeof FLUSH_MODE];
export type FlushResult = (typeof FLUSH_RESULT)[keyof typeof FLUSH_RESULT];
export type FileStatusKind = (typeof FILE_STATUS)[keyof typeof FILE_STATUS];
