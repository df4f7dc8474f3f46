/**
 * libcurl (through koffi) for one job: a GET whose body libcurl writes straight into a local file at an offset,
 * with its default write callback (fwrite to an unbuffered FILE* of its own), on a libuv worker thread. The body
 * never enters JavaScript. Receiving through Node's HTTP stack cost more CPU than the server spent sending: measured on
 * this 2-core VM, 1 GiB in 8 MiB ranges, 4 at a time, from s3rver into a file: the SDK 2.2-2.8 s and 1.8-2.3 s of
 * client CPU, libcurl 1.6-2.1 s and 1.1-1.3 s.
 *
 * Each easy handle keeps its connection for the next GET (keep-alive); idle handles are pooled. A transfer holds
 * a libuv worker thread for its whole length, and those threads also do the vault's file I/O: at most
 * MAX_TRANSFERS run at once (of 16 threads), the rest wait their turn.
 */
import koffi, { type TypeObject } from 'koffi';
import PQueue from 'p-queue';

const CURLOPT_WRITEDATA = 10001;
const CURLOPT_URL = 10002;
const CURLOPT_PROXY = 10004;
const CURLOPT_LOW_SPEED_LIMIT = 19;
const CURLOPT_LOW_SPEED_TIME = 20;
const CURLOPT_HTTPHEADER = 10023;
const CURLOPT_FAILONERROR = 45;
const CURLOPT_HTTP_VERSION = 84;
const CURLOPT_BUFFERSIZE = 98;
const CURLOPT_NOSIGNAL = 99;
const CURLOPT_CONNECTTIMEOUT_MS = 156;
const CURL_HTTP_VERSION_1_1 = 2;
const CURLINFO_RESPONSE_CODE = 0x200002;
const CURLINFO_SIZE_DOWNLOAD_T = 0x600008;
const CURLH_HEADER = 1;
const CURL_GLOBAL_DEFAULT = 3;
const MAX_TRANSFERS = 6;
const _IONBF = 2;

type Ptr = unknown;

interface Lib {
  init: () => Ptr;
  cleanup: (h: Ptr) => void;
  setopt: (h: Ptr, opt: number, ...typed: unknown[]) => number;
  perform: { async: (h: Ptr, cb: (err: unknown, rc: number) => void) => void };
  getinfo: (h: Ptr, info: number, ...typed: unknown[]) => number;
  header: (h: Ptr, name: string, index: number, origin: number, request: number, out: Ptr[]) => number;
  slistAppend: (list: Ptr, s: string) => Ptr;
  slistFree: (list: Ptr) => void;
  fopen: (path: string, mode: string) => Ptr;
  setvbuf: (f: Ptr, buf: Ptr, mode: number, size: number) => number;
  fseeko: (f: Ptr, offset: number, whence: number) => number;
  fclose: (f: Ptr) => number;
}

/** struct curl_header, anonymous: a module evaluated twice in one process (test runners) must not register a name twice. */
let curlHeader: TypeObject | undefined;

export interface CurlGet {
  /** libcurl's result: 0 when the transfer completed with a status below 400. */
  code: number;
  status: number;
  /** Body bytes written to the file. */
  bytes: number;
  etag: string | undefined;
}

export class Curl {
  private readonly idle: Ptr[] = [];
  private readonly slots = new PQueue({ concurrency: MAX_TRANSFERS });

  private constructor(private readonly lib: Lib) {}

  /** libcurl, or null where it is not installed (the SDK then does every transfer). */
  static load(): Curl | null {
    try {
      const curl = koffi.load('libcurl.so.4');
      const libc = koffi.load('libc.so.6');
      curlHeader ??= koffi.struct({ name: 'char *', value: 'char *', amount: 'size_t', index: 'size_t', origin: 'unsigned int', anchor: 'void *' });
      const lib: Lib = {
        init: curl.func('void *curl_easy_init()') as Lib['init'],
        cleanup: curl.func('void curl_easy_cleanup(void *h)') as Lib['cleanup'],
        setopt: curl.func('int curl_easy_setopt(void *h, int opt, ...)') as Lib['setopt'],
        perform: curl.func('int curl_easy_perform(void *h)') as unknown as Lib['perform'],
        getinfo: curl.func('int curl_easy_getinfo(void *h, int info, ...)') as Lib['getinfo'],
        header: curl.func('int curl_easy_header(void *h, const char *name, size_t index, unsigned int origin, int request, _Out_ void **out)') as Lib['header'],
        slistAppend: curl.func('void *curl_slist_append(void *list, const char *s)') as Lib['slistAppend'],
        slistFree: curl.func('void curl_slist_free_all(void *list)') as Lib['slistFree'],
        fopen: libc.func('void *fopen(const char *path, const char *mode)') as Lib['fopen'],
        setvbuf: libc.func('int setvbuf(void *f, void *buf, int mode, size_t size)') as Lib['setvbuf'],
        fseeko: libc.func('int fseeko(void *f, int64_t offset, int whence)') as Lib['fseeko'],
        fclose: libc.func('int fclose(void *f)') as Lib['fclose'],
      };
      // Not thread-safe, so once here on the main thread (curl_easy_init would do it lazily on any thread).
      (curl.func('int curl_global_init(long flags)') as (f: number) => number)(CURL_GLOBAL_DEFAULT);
      return new Curl(lib);
    } catch {
      return null;
    }
  }

  /**
   * GET `url` with `headers` ("name: value"), the body written into the open file `fd` from `offset` (through
   * a file description of its own: /proc/self/fd/N opened again, so no file position is shared). Errors of
   * transport and statuses of 400 and up come back in `code`/`status` (no body is written for those).
   */
  getToFile(url: string, headers: string[], fd: number, offset: number, timeouts: { connectMs: number; idleMs: number }): Promise<CurlGet> {
    return this.slots.add(() => this.transfer(url, headers, fd, offset, timeouts));
  }

  private async transfer(url: string, headers: string[], fd: number, offset: number, timeouts: { connectMs: number; idleMs: number }): Promise<CurlGet> {
    const l = this.lib;
    const path = `/proc/self/fd/${fd}`;
    const file = l.fopen(path, 'r+');
    if (!file) throw new Error(`${path}: cannot open the data file`);
    const h = this.idle.pop() ?? l.init();
    let list: Ptr = null;
    try {
      // Unbuffered: each piece libcurl hands over (16 KiB at most) is one write. Through stdio's 4 KiB buffer it
      // was two (a buffer's worth, then the rest): 1 GiB from s3rver into a file, 4 ranges at once, took 2.5-3.0 s
      // with 1.1 s of system CPU buffered, 2.0-2.2 s with 0.8 s unbuffered (the server, on the same cores, gained too).
      if (l.setvbuf(file, null, _IONBF, 0) !== 0) throw new Error(`${path}: cannot make the data file unbuffered`);
      if (l.fseeko(file, offset, 0) !== 0) throw new Error(`${path}: cannot seek to ${offset}`);
      for (const line of headers) list = l.slistAppend(list, line);
      l.setopt(h, CURLOPT_URL, 'const char *', url);
      l.setopt(h, CURLOPT_HTTPHEADER, 'void *', list);
      l.setopt(h, CURLOPT_WRITEDATA, 'void *', file);
      l.setopt(h, CURLOPT_FAILONERROR, 'long', 1);
      l.setopt(h, CURLOPT_NOSIGNAL, 'long', 1);
      l.setopt(h, CURLOPT_HTTP_VERSION, 'long', CURL_HTTP_VERSION_1_1);
      l.setopt(h, CURLOPT_BUFFERSIZE, 'long', 512 * 1024);
      // The SDK uses no proxy from the environment; neither do these requests.
      l.setopt(h, CURLOPT_PROXY, 'const char *', '');
      l.setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 'long', timeouts.connectMs);
      // A connection that sees no byte for idleMs fails, as the SDK's socket timeout does.
      l.setopt(h, CURLOPT_LOW_SPEED_LIMIT, 'long', 1);
      l.setopt(h, CURLOPT_LOW_SPEED_TIME, 'long', Math.max(1, Math.ceil(timeouts.idleMs / 1000)));
      const code = await new Promise<number>((resolve, reject) => l.perform.async(h, (err, rc) => (err ? reject(err) : resolve(rc))));
      const status = Buffer.alloc(8);
      l.getinfo(h, CURLINFO_RESPONSE_CODE, 'long *', status);
      const bytes = Buffer.alloc(8);
      l.getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, 'int64_t *', bytes);
      const out: Ptr[] = [null];
      const etag = code === 0 && l.header(h, 'etag', 0, CURLH_HEADER, -1, out) === 0 ? (koffi.decode(out[0], curlHeader!) as { value: string }).value : undefined;
      return { code, status: Number(status.readBigInt64LE()), bytes: Number(bytes.readBigInt64LE()), etag };
    } finally {
      // fclose writes what stdio still buffers: failing, the file lacks bytes the transfer counted.
      const closed = l.fclose(file) === 0;
      l.slistFree(list);
      this.idle.push(h);
      if (!closed) throw new Error(`${path}: writing the fetched bytes failed`);
    }
  }

  close(): void {
    for (const h of this.idle.splice(0)) this.lib.cleanup(h);
  }
}
