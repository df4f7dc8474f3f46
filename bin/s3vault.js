#!/usr/bin/env node
// The thread pool does the vault's file I/O, libcurl's transfers, read replies and the kernel notifications (koffi
// async calls; libfuse's threaded loop, when the main thread cannot poll /dev/fuse, holds one for the mount's
// life): Node's default 4 is too few. It must be set before anything starts the pool: here, then the program.
process.env.UV_THREADPOOL_SIZE ??= '16';
// Node 20 is what Debian 12 machines run; the SDK's notice about future versions is noise for a mount.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
await import('../dist/cli/main.js');
