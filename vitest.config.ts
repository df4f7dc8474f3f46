import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests mount real FUSE filesystems and run real servers: one file at a time keeps
    // the 2-core machine predictable, and every test carries its own timeout so a hung mount fails.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['verbose', './test/helpers/start-reporter.ts'],
    // The AWS SDK warns about Node 20 in every test process that loads it (only "true" silences it).
    setupFiles: ['./test/helpers/scratch-setup.ts'],
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
