/** Per-block checksums: XXH64 (xxhash-wasm), as 16 hex digits. Fast enough to run on every fetch and commit. */
import xxhash from 'xxhash-wasm';

let hasher: Awaited<ReturnType<typeof xxhash>> | undefined;

/** Load the WebAssembly hasher once, before the first vault opens. */
export async function initChecksums(): Promise<void> {
  hasher ??= await xxhash();
}

export function blockSum(data: Uint8Array): string {
  if (!hasher) throw new Error('checksums not initialised: call initChecksums() first');
  return hasher.h64Raw(data).toString(16).padStart(16, '0');
}

/** The same checksum, fed piece by piece (a block arriving in network chunks). */
export function blockSummer(): { update(data: Uint8Array): void; digest(): string } {
  if (!hasher) throw new Error('checksums not initialised: call initChecksums() first');
  const h = hasher.create64();
  return {
    update: (data) => void h.update(data),
    digest: () => h.digest().toString(16).padStart(16, '0'),
  };
}
