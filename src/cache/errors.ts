/** Errors of the vault layer. `code` is stable (tests and the CLI match on it); the message names the path. */
export type VaultErrorCode = 'CORRUPT' | 'NEWER_SCHEMA' | 'IN_USE' | 'IO' | 'TRANSFER' | 'NOT_FOUND' | 'INVALID';

export class VaultError extends Error {
  constructor(
    readonly code: VaultErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'VaultError';
  }
}
