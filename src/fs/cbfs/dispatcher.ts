/**
 * Event dispatch for any CbfsHandlers backend (spec/seed-inventory.md R1–R4):
 * - R1 per-file serialization: events for one file run one after another. Exceptions: with serializeAccess off,
 *   reads of non-overlapping ranges of one file run in parallel; queries that change nothing (GetFileInfo,
 *   EnumerateDirectory, extended-attribute and link reads, SEEK_DATA) run alongside reads and each other, never
 *   alongside a change of the same file.
 * - R2/R3 cross-file concurrency: at most `maxConcurrentEvents` handlers run at once (1 = SerializeEvents).
 * - R4 deadlines: 0 (none) or ≥ 3000 ms. An expired event fails with EIO; the tardy handler runs on and its result
 *   is ignored (the file's next event still waits for it). `resetTimeout(path)` restarts the timers of every
 *   running event of that file; `resetTimeout(path, 0)` disables them.
 * - Error event: an exception that is not an FsError is reported to `onError` (the adapter maps it to an errno).
 * The backend names the file whose events it resets: no AsyncLocalStorage, whose promise hooks cost every promise
 * of the process (the SDK's requests took 10-30% more CPU with one active, measured on Node 20).
 */
import { E, FsError } from '../errors.js';
import type { AttributeChange, Caller, CbfsHandlers, ChangeNotifier, DirEntry, FileInfo } from './events.js';
import { RENAME_EXCHANGE } from './events.js';

/** ERROR_IMPLEMENTATION_LIMIT: a nonzero deadline under 3000 ms (R4). */
export const ERROR_IMPLEMENTATION_LIMIT = 1292;
export const MIN_EVENT_TIMEOUT_MS = 3000;

export interface DispatchOptions {
  /** Largest number of handlers running at once; 1 serializes all events (SerializeEvents). */
  maxConcurrentEvents: number;
  /** When true (the CBFS default), even non-overlapping reads of one file wait for each other. */
  serializeAccess: boolean;
  /** Per-event deadline in ms: 0 = none, else ≥ 3000. */
  timeoutMs: number;
  onError?: (op: string, path: string, err: unknown) => void;
  onTimeout?: (op: string, path: string, ms: number) => void;
}

type Access = { kind: 'change' } | { kind: 'query' } | { kind: 'read'; start: number; end: number };

interface Running {
  access: Access;
  done: Promise<void>;
  timer?: { reset(ms?: number): void };
}

/** Every dispatcher alive, for resetTimeout (a backend does not hold its dispatcher). */
const dispatchers = new Set<WeakRef<EventDispatcher>>();

/** ResetTimeout from inside a handler: restart the deadlines of the running events of `path` (long fetches and moves call it as they progress). */
export function resetTimeout(path: string, ms?: number): void {
  for (const ref of dispatchers) {
    const d = ref.deref();
    if (d) d.resetFile(path, ms);
    else dispatchers.delete(ref);
  }
}

function conflicts(a: Access, b: Access, serializeAccess: boolean): boolean {
  if (a.kind === 'change' || b.kind === 'change') return true;
  if (a.kind === 'read' && b.kind === 'read') return serializeAccess || (a.start < b.end && b.start < a.end);
  return false;
}

export function checkTimeout(ms: number): void {
  if (ms !== 0 && ms < MIN_EVENT_TIMEOUT_MS) {
    throw new Error(`event timeout must be 0 (none) or at least ${MIN_EVENT_TIMEOUT_MS} ms, not ${ms} (ERROR_IMPLEMENTATION_LIMIT ${ERROR_IMPLEMENTATION_LIMIT})`);
  }
}

export class EventDispatcher implements CbfsHandlers {
  private readonly files = new Map<string, Running[]>();
  private readonly handleFiles = new Map<number, string>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly inner: CbfsHandlers,
    private readonly options: DispatchOptions,
  ) {
    checkTimeout(options.timeoutMs);
    if (options.maxConcurrentEvents < 1) throw new Error('maxConcurrentEvents must be at least 1');
    dispatchers.add(new WeakRef(this));
  }

  /** How many events are running or waiting (for tests and status). */
  get inFlight(): number {
    let n = 0;
    for (const list of this.files.values()) n += list.length;
    return n;
  }

  private async slot(): Promise<void> {
    if (this.running < this.options.maxConcurrentEvents) {
      this.running++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private freeSlot(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }

  /** Run one event: wait for the events of its files it must follow, then for a slot, then run it under its deadline. */
  private async dispatch<T>(op: string, keys: string[], access: Access, fn: () => Promise<T>): Promise<T> {
    let finish!: () => void;
    const me: Running = { access, done: new Promise<void>((r) => (finish = r)) };
    const before: Promise<void>[] = [];
    const unique = [...new Set(keys)];
    for (const k of unique) {
      const list = this.files.get(k) ?? [];
      for (const r of list) if (conflicts(r.access, access, this.options.serializeAccess)) before.push(r.done);
      list.push(me);
      this.files.set(k, list);
    }
    const leave = () => {
      for (const k of unique) {
        const list = this.files.get(k)!;
        list.splice(list.indexOf(me), 1);
        if (!list.length) this.files.delete(k);
      }
      finish();
    };
    if (before.length) await Promise.all(before);
    await this.slot();
    const path = unique[0] ?? '';
    const { answer, finished } = this.withDeadline(op, path, me, fn);
    // The slot and the file's next events wait for the handler itself, even after its deadline failed the request.
    void finished.then(() => {
      this.freeSlot();
      leave();
    });
    return answer;
  }

  /** `answer` settles with the handler or at its deadline, whichever is first; `finished` when the handler is done. */
  private withDeadline<T>(op: string, path: string, me: Running, fn: () => Promise<T>): { answer: Promise<T>; finished: Promise<void> } {
    const defaultMs = this.options.timeoutMs;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let fail!: (err: unknown) => void;
    const expired = new Promise<never>((_, reject) => (fail = reject));
    const arm = (ms: number) => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      if (ms <= 0 || settled) return;
      timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        this.options.onTimeout?.(op, path, ms);
        fail(new FsError(E.EIO, op, path, `no answer within ${ms} ms (event deadline)`));
      }, ms);
    };
    me.timer = { reset: (ms = defaultMs) => arm(ms) };
    arm(defaultMs);
    // A synchronous throw becomes the handler's rejection.
    const handler = new Promise<T>((resolve) => resolve(fn())).then(
      (v) => {
        settled = true;
        return v;
      },
      (err: unknown) => {
        settled = true;
        if (!(err instanceof FsError)) this.options.onError?.(op, path, err);
        throw err;
      },
    );
    const finished = handler.then(
      () => undefined,
      () => undefined,
    );
    void finished.then(() => {
      if (timer) clearTimeout(timer);
      me.timer = undefined;
    });
    expired.catch(() => undefined);
    return { answer: Promise.race([handler, expired]), finished };
  }

  /** R4: restart (or with 0, stop) the deadlines of every running event of a file. */
  resetFile(path: string, ms?: number): void {
    for (const r of this.files.get(path) ?? []) r.timer?.reset(ms ?? this.options.timeoutMs);
  }

  private fileOf(handle: number): string {
    return this.handleFiles.get(handle) ?? `handle:${handle}`;
  }

  private movedHandles(from: string, to: string, exchange: boolean): void {
    for (const [h, p] of this.handleFiles) {
      if (p === from || p.startsWith(`${from}/`)) this.handleFiles.set(h, to + p.slice(from.length));
      else if (exchange && (p === to || p.startsWith(`${to}/`))) this.handleFiles.set(h, from + p.slice(to.length));
    }
  }

  // ---- the events ----

  mount(): Promise<void> {
    return this.inner.mount();
  }
  unmount(): Promise<void> {
    return this.inner.unmount();
  }
  getFileInfo(path: string): Promise<FileInfo | null> {
    return this.dispatch('GetFileInfo', [path], { kind: 'query' }, () => this.inner.getFileInfo(path));
  }
  getHandleInfo(handle: number): Promise<FileInfo> {
    return this.dispatch('GetFileInfo', [this.fileOf(handle)], { kind: 'query' }, () => this.inner.getHandleInfo(handle));
  }
  enumerateDirectory(path: string): Promise<DirEntry[]> {
    return this.dispatch('EnumerateDirectory', [path], { kind: 'query' }, () => this.inner.enumerateDirectory(path));
  }
  async createFile(path: string, mode: number, flags: number, caller: Caller): Promise<{ handle: number; info: FileInfo }> {
    const r = await this.dispatch('CreateFile', [path], { kind: 'change' }, () => this.inner.createFile(path, mode, flags, caller));
    this.handleFiles.set(r.handle, path);
    return r;
  }
  createDirectory(path: string, mode: number, caller: Caller): Promise<FileInfo> {
    return this.dispatch('CreateFile', [path], { kind: 'change' }, () => this.inner.createDirectory(path, mode, caller));
  }
  createSymlink(path: string, target: string, caller: Caller): Promise<FileInfo> {
    return this.dispatch('CreateFile', [path], { kind: 'change' }, () => this.inner.createSymlink(path, target, caller));
  }
  readSymlink(path: string): Promise<string> {
    return this.dispatch('ReadSymlink', [path], { kind: 'query' }, () => this.inner.readSymlink(path));
  }
  async openFile(path: string, flags: number): Promise<number> {
    const h = await this.dispatch('OpenFile', [path], { kind: 'change' }, () => this.inner.openFile(path, flags));
    this.handleFiles.set(h, path);
    return h;
  }
  readFile(handle: number, offset: number, length: number): Promise<Buffer> {
    return this.dispatch('ReadFile', [this.fileOf(handle)], { kind: 'read', start: offset, end: offset + length }, () => this.inner.readFile(handle, offset, length));
  }
  readFileInto(handle: number, offset: number, length: number, send: (fd: number, offset: number, length: number) => Promise<void>): Promise<boolean> {
    const inner = this.inner.readFileInto;
    if (!inner) return Promise.resolve(false);
    return this.dispatch('ReadFile', [this.fileOf(handle)], { kind: 'read', start: offset, end: offset + length }, () => inner.call(this.inner, handle, offset, length, send));
  }
  writeFile(handle: number, offset: number, data: Buffer): Promise<number> {
    return this.dispatch('WriteFile', [this.fileOf(handle)], { kind: 'change' }, () => this.inner.writeFile(handle, offset, data));
  }
  cleanupFile(handle: number): Promise<void> {
    return this.dispatch('CleanupFile', [this.fileOf(handle)], { kind: 'change' }, () => this.inner.cleanupFile(handle));
  }
  async closeFile(handle: number): Promise<void> {
    try {
      await this.dispatch('CloseFile', [this.fileOf(handle)], { kind: 'change' }, () => this.inner.closeFile(handle));
    } finally {
      this.handleFiles.delete(handle);
    }
  }
  flushFile(handle: number, dataOnly: boolean): Promise<void> {
    return this.dispatch('FlushFile', [this.fileOf(handle)], { kind: 'change' }, () => this.inner.flushFile(handle, dataOnly));
  }
  setFileAttributes(path: string, change: AttributeChange, handle?: number): Promise<FileInfo> {
    return this.dispatch('SetFileAttributes', [path], { kind: 'change' }, () => this.inner.setFileAttributes(path, change, handle));
  }
  deleteFile(path: string): Promise<void> {
    return this.dispatch('DeleteFile', [path], { kind: 'change' }, () => this.inner.deleteFile(path));
  }
  deleteDirectory(path: string): Promise<void> {
    return this.dispatch('DeleteFile', [path], { kind: 'change' }, () => this.inner.deleteDirectory(path));
  }
  async renameOrMoveFile(from: string, to: string, flags: number): Promise<void> {
    await this.dispatch('RenameOrMoveFile', [from, to], { kind: 'change' }, () => this.inner.renameOrMoveFile(from, to, flags));
    this.movedHandles(from, to, (flags & RENAME_EXCHANGE) !== 0);
  }
  getExtendedAttribute(path: string, name: string): Promise<Buffer | null> {
    return this.dispatch('QueryEa', [path], { kind: 'query' }, () => this.inner.getExtendedAttribute(path, name));
  }
  listExtendedAttributes(path: string): Promise<string[]> {
    return this.dispatch('QueryEa', [path], { kind: 'query' }, () => this.inner.listExtendedAttributes(path));
  }
  setExtendedAttribute(path: string, name: string, value: Buffer): Promise<void> {
    return this.dispatch('SetEa', [path], { kind: 'change' }, () => this.inner.setExtendedAttribute(path, name, value));
  }
  removeExtendedAttribute(path: string, name: string): Promise<boolean> {
    return this.dispatch('SetEa', [path], { kind: 'change' }, () => this.inner.removeExtendedAttribute(path, name));
  }
  allocateSpace(handle: number, mode: number, offset: number, length: number): Promise<void> {
    return this.dispatch('SetAllocationSize', [this.fileOf(handle)], { kind: 'change' }, () => this.inner.allocateSpace(handle, mode, offset, length));
  }
  seekData(handle: number, offset: number, whence: number): Promise<number> {
    return this.dispatch('SeekData', [this.fileOf(handle)], { kind: 'query' }, () => this.inner.seekData(handle, offset, whence));
  }
  getVolumeSize(): { total: number; free: number; nameMax?: number } {
    return this.inner.getVolumeSize();
  }
  cacheToken(handle: number): string | undefined {
    return this.inner.cacheToken?.(handle);
  }
  passthroughFd(handle: number, force: boolean): number | undefined {
    return this.inner.passthroughFd?.(handle, force);
  }
  passthroughOpened(handle: number, writable: boolean): void {
    this.inner.passthroughOpened?.(handle, writable);
  }
  adoptPassthroughWrites(handle: number): void {
    this.inner.adoptPassthroughWrites?.(handle);
  }
  openFileInfo(path: string): FileInfo | undefined {
    return this.inner.openFileInfo?.(path);
  }
  setNotifier(notifier: ChangeNotifier): void {
    this.inner.setNotifier?.(notifier);
  }
}
