#!/usr/bin/env node
// The FUSE loop holds one libuv thread-pool thread for the life of the mount (koffi async call), so the pool
// must be larger than Node's default 4 before anything starts it: set it here, then load the program.
process.env.UV_THREADPOOL_SIZE ??= '16';
// Node 20 is what Debian 12 machines run; the SDK's notice about future versions is noise for a mount.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
await import('../dist/cli/main.js');
