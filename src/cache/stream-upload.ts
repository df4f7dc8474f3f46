/**
 * Stream uploads (vault.streamUploads): the parts of a large file being written from its start go to storage
 * while it is written — each part once the writer is a whole part past it — so that when the file is closed only
 * its tail is left to send. The upload of the closed file then completes this multipart upload: every part sent
 * early whose blocks still have the checksums they were sent with is kept, any other is sent again.
 *
 * The object's metadata is fixed when the multipart upload starts, before the last write: it carries no mtime
 * (storage's LastModified, the time of completion, stands for it), and a file whose metadata changed meanwhile
 * (chmod, chown, an explicit mtime as `cp -p` or `rsync -t` set) is uploaded whole instead, the early parts
 * dropped. The upload id is journaled (a tag) before the first part leaves: after a crash it is aborted.
 */
import type { MultipartStorage, ObjectMeta } from '../storage/driver.js';
import type { Logger } from '../log.js';
import { StorageError } from '../storage/rwresult.js';
import { blockSum } from './checksum.js';

/** Parts in flight and their buffers, shared by every stream of a vault: the memory bound. */
export class StreamBudget {
  private readonly idle: Buffer[] = [];
  private inUse = 0;

  constructor(
    readonly partSize: number,
    readonly maxParts: number,
  ) {}

  /** A part buffer, or undefined when maxParts are in flight already. */
  take(): Buffer | undefined {
    if (this.inUse >= this.maxParts) return undefined;
    this.inUse++;
    return this.idle.pop() ?? Buffer.allocUnsafeSlow(this.partSize);
  }

  give(buf: Buffer): void {
    this.inUse--;
    this.idle.push(buf);
  }
}

/**
 * Reads the file's data file, through the handle open now: a stream outlives the handles of the file (the
 * upload at close reopens it), so each call brings its reader.
 */
export type PartReader = (offset: number, length: number, into: Buffer) => Promise<Buffer>;

/** Records the stream's upload id in the vault's journal (null: the upload is over). */
export type StreamJournal = (uploadId: string | null) => void;

export class StreamUpload {
  /** Sent parts: 1-based number → ETag and the checksums of its blocks as sent. */
  private readonly sent = new Map<number, { etag: string; sums: string[] }>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly reads = new Set<Promise<Buffer>>();
  private starting: Promise<string> | undefined;
  private uploadId: string | undefined;
  private next = 1;
  private failed = false;
  /** The upload of the file took the stream over: no more parts leave. */
  private taken = false;
  private written = 0;
  private reader: PartReader | undefined;
  /** An mtime was set explicitly after the stream began: the object must carry it, so the stream cannot serve. */
  timesSet = false;

  constructor(
    private readonly ops: MultipartStorage,
    private readonly budget: StreamBudget,
    readonly key: string,
    readonly meta: { meta: ObjectMeta; contentType?: string },
    private readonly blockSize: number,
    private readonly journal: StreamJournal,
    private readonly log: Logger,
  ) {}

  markTimesSet(): void {
    this.timesSet = true;
  }

  /** Send each whole part the writer is a part past (`written`: the data file's size), as the budget allows. */
  advance(written: number, read: PartReader): void {
    const ps = this.ops.partSize;
    // Remembered so that a part that lands starts the next at once, not at the next tick of the vault.
    this.written = written;
    this.reader = read;
    while (!this.failed && !this.taken && written >= (this.next + 1) * ps) {
      const buf = this.budget.take();
      if (!buf) return;
      const n = this.next++;
      const p: Promise<void> = this.send(n, buf, read)
        .catch((err: unknown) => {
          // Stop streaming; the upload at close sends what is missing (or everything, if the stream is unusable).
          this.failed = true;
          this.log.warn({ key: this.key, part: n, err: (err as Error).message }, 'stream upload: a part failed; the rest goes at upload');
        })
        .finally(() => {
          this.budget.give(buf);
          this.inflight.delete(p);
          this.advance(this.written, this.reader!);
        });
      this.inflight.add(p);
    }
  }

  private async send(n: number, buf: Buffer, read: PartReader): Promise<void> {
    const ps = this.ops.partSize;
    const id = await (this.starting ??= this.ops.start(this.key, this.meta).then((uploadId) => {
      this.uploadId = uploadId;
      this.journal(uploadId);
      return uploadId;
    }));
    const reading = read((n - 1) * ps, ps, buf);
    this.reads.add(reading);
    let data: Buffer;
    try {
      data = await reading;
    } finally {
      this.reads.delete(reading);
    }
    if (data.length !== ps) throw new Error(`part ${n} is short (${data.length} bytes)`);
    const sums = this.sums(data);
    this.sent.set(n, { etag: await this.ops.putPart(this.key, id, n, data), sums });
  }

  private sums(data: Buffer): string[] {
    const out: string[] = [];
    for (let at = 0; at < data.length; at += this.blockSize) out.push(blockSum(data.subarray(at, at + this.blockSize)));
    return out;
  }

  /** Wait until no part is being read (before the handle they read through closes; their sending goes on). */
  async readsDone(): Promise<void> {
    while (this.reads.size) await Promise.allSettled([...this.reads]);
  }

  private async settle(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  /**
   * For the upload of the file, `size` bytes: the upload id and the parts sent early that are still true to the
   * data file (read back and compared block by block), or undefined if none is (the stream is then aborted).
   */
  async reusable(size: number, read: PartReader): Promise<{ uploadId: string; parts: Map<number, string> } | undefined> {
    this.taken = true;
    await this.settle();
    const ps = this.ops.partSize;
    const parts = new Map<number, string>();
    const buf = this.uploadId ? this.budget.take() : undefined;
    try {
      for (const [n, part] of [...this.sent].sort((a, b) => a[0] - b[0])) {
        if (!buf || n * ps > size) continue;
        const data = await read((n - 1) * ps, ps, buf);
        const now = this.sums(data);
        if (now.length === part.sums.length && now.every((s, i) => s === part.sums[i])) parts.set(n, part.etag);
      }
    } finally {
      if (buf) this.budget.give(buf);
    }
    if (!this.uploadId || !parts.size) {
      await this.abort();
      return undefined;
    }
    this.log.debug({ key: this.key, kept: parts.size, sent: this.sent.size }, 'stream upload: completing with the parts sent early');
    return { uploadId: this.uploadId, parts };
  }

  /** Drop the multipart upload and its parts (best effort: storage expires what an abort misses). */
  async abort(): Promise<void> {
    this.failed = true;
    await this.settle();
    await this.starting?.catch(() => undefined);
    if (!this.uploadId) return;
    const id = this.uploadId;
    this.uploadId = undefined;
    try {
      await this.ops.abort(this.key, id);
    } catch (err) {
      // Unreachable storage: journaled, retried at the next start. Refused (a server without AbortMultipartUpload,
      // an upload already gone): nothing more can be done; storage expires incomplete uploads by its own rules.
      if (err instanceof StorageError && err.transient) {
        this.log.warn({ key: this.key, err: err.message }, 'stream upload: abort failed; it is retried at the next start');
        return;
      }
      this.log.warn({ key: this.key, err: (err as Error).message }, 'stream upload: abort refused; the incomplete upload is left to storage');
    }
    this.journal(null);
  }

  /** The upload was completed (or the driver aborted it on failure); the caller forgets the journaled id. */
  finished(): void {
    this.uploadId = undefined;
  }
}
