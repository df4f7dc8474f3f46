/**
 * RWRESULT: the outcome of one transfer between the vault and external storage (CBCache ReadData/WriteData).
 * Values are the seed's own (spec/seed-inventory.md R47). Every storage call reports one: successes in the
 * returned value, failures in the StorageError it throws.
 */
export const RWRESULT = {
  SUCCESS: 0x00,
  PARTIAL: 0x80,
  RANGE_BEYOND_EOF: 0x81,
  FILE_MODIFIED_EXTERNALLY: 0x82,
  FILE_MODIFIED_LOCALLY: 0x83,
  FAILURE: 0x8d,
  FILE_FAILURE: 0x8e,
  PERMANENT_FAILURE: 0x8f,
} as const;

export type RwResult = (typeof RWRESULT)[keyof typeof RWRESULT];

export function rwresultName(code: number): string {
  for (const [name, value] of Object.entries(RWRESULT)) if (value === code) return name;
  return `0x${code.toString(16)}`;
}

/** A failed storage call: which operation, which key, and the RWRESULT that tells the vault what to do next. */
export class StorageError extends Error {
  constructor(
    readonly result: RwResult,
    readonly op: string,
    readonly key: string | undefined,
    /** The failure alone, without operation and key: for one-line messages to users. */
    readonly detail: string,
    options?: { cause?: unknown; httpStatus?: number },
  ) {
    super(`${op}${key !== undefined ? ` ${JSON.stringify(key)}` : ''}: ${detail} [${rwresultName(result)}]`, options);
    this.name = 'StorageError';
    this.httpStatus = options?.httpStatus;
  }

  /** The server's HTTP status, when a server answered (undefined: unreachable, reset, timed out). */
  readonly httpStatus: number | undefined;

  /** Transient: retry later (timeouts, resets, 5xx, throttling). */
  get transient(): boolean {
    return this.result === RWRESULT.FAILURE;
  }
}
