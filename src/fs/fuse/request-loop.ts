/**
 * The FUSE request loop on the Node main thread: /dev/fuse joins libuv's epoll set, each request is read when it
 * arrives and handed to libfuse (fuse_session_process_buf), which calls the operation callbacks right there.
 *
 * Why not libfuse's own loop threads: a callback koffi relays from another thread wakes the main thread and
 * puts its caller to sleep until the JavaScript returns — two thread switches per request on top of the kernel's
 * own. On this 2-core VM that cost 100 µs of CPU per request even for one answered at once (a getxattr of
 * security.capability, which the kernel sends before every write): `tar x` of 5 000 files makes 69 000
 * requests. Read here, a request costs what its handler costs.
 *
 * How: a libuv pipe handle over a dup() of the session's descriptor (libuv puts it in non-blocking mode and polls
 * it; its close on exit leaves libfuse's descriptor alone), read into one buffer the size of the largest request,
 * through net.Socket's `onread` (no copy, no allocation per request). Handlers copy what they keep before they
 * return (as they did for libfuse's threads, which reused their buffers too).
 */
import net from 'node:net';
import koffi from 'koffi';
import type { Logger } from '../../log.js';
import { libc, type FuseLib, type Ptr } from './native.js';

/** libfuse's own receive buffer: the largest WRITE (256 pages) plus its headers. */
const REQUEST_BUFFER = 256 * 4096 + 4096;
/** struct fuse_buf: size @0, flags @8, mem @16, fd @24, pos @32. */
const FUSE_BUF_SIZE = 40;

interface PipeHandle {
  open(fd: number): number;
  close(): void;
}
type PipeWrap = { Pipe: new (type: number) => PipeHandle; constants: { SOCKET: number } };

/** Whether requests can be served on the main thread here (serveOnMainThread returns null otherwise). */
export function canServeOnMainThread(): boolean {
  return pipeWrap() !== null;
}

/** Node's pipe handle (libuv uv_pipe_t): it takes any pollable descriptor; net.Socket({ fd }) refuses a character device. */
function pipeWrap(): PipeWrap | null {
  try {
    return (process as unknown as { binding(name: string): PipeWrap }).binding('pipe_wrap');
  } catch {
    return null;
  }
}

/**
 * Start serving the session's requests on the main thread. Resolves when the filesystem is unmounted (the kernel
 * ends the connection: ENODEV), rejects on any other read error. null: this Node cannot poll the descriptor (the
 * caller runs libfuse's threaded loop instead).
 */
export function serveOnMainThread(lib: FuseLib, se: Ptr, log: Logger, onRequest?: (request: Buffer, length: number) => void): Promise<number> | null {
  const wrap = pipeWrap();
  if (!wrap) return null;
  const c = libc();
  const buffer = Buffer.alloc(REQUEST_BUFFER);
  // A large Buffer's bytes live outside the JS heap and never move: their address is taken once.
  const fbuf = Buffer.alloc(FUSE_BUF_SIZE);
  fbuf.writeBigUInt64LE(koffi.address(c.memmove(buffer, buffer, 0)), 16);
  fbuf.writeInt32LE(-1, 24);

  const open = (): net.Socket | null => {
    const fd = c.dup(lib.sessionFd(se));
    if (fd < 0) return null;
    const handle = new wrap.Pipe(wrap.constants.SOCKET);
    if (handle.open(fd) !== 0) {
      handle.close();
      c.close(fd);
      return null;
    }
    return new net.Socket({
      handle,
      readable: true,
      writable: false,
      allowHalfOpen: true,
      onread: {
        buffer,
        callback: (n: number) => {
          fbuf.writeBigUInt64LE(BigInt(n), 0);
          onRequest?.(buffer, n);
          try {
            lib.processBuf(se, fbuf);
          } catch (err) {
            // A handler that threw before answering: the loop goes on (libfuse's threads would have).
            log.error({ err: (err as Error).message }, 'FUSE request handler failed');
          }
          return true;
        },
      },
    } as net.SocketConstructorOpts);
  };

  const first = open();
  if (!first) return null;
  return new Promise((resolve, reject) => {
    const watch = (socket: net.Socket): void => {
      socket.once('error', (err: NodeJS.ErrnoException) => {
        socket.destroy();
        // The connection is gone: unmounted (fusermount3 -u, umount) or aborted.
        if (err.code === 'ENODEV' || err.code === 'ECONNABORTED') return resolve(0);
        // A request the kernel dropped while it was being read (interrupted): libfuse's loop reads on.
        if (err.code === 'ENOENT' || err.code === 'EINTR') {
          const next = open();
          if (next) return watch(next);
        }
        log.error({ err: err.message }, 'reading FUSE requests failed');
        reject(err);
      });
      socket.once('end', () => resolve(0));
    };
    watch(first);
  });
}
