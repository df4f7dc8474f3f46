/** Exit codes of the s3vault command (documented in the README). */
export const EXIT = {
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  STORAGE: 3,
  VAULT: 4,
  MOUNT: 5,
} as const;
