/**
 * Part buffers shared by every multipart upload of a driver: at most `max` buffers of `size` bytes, reused from
 * part to part. Reuse is the speed: a fresh buffer per part touched new memory for every byte uploaded, and on
 * a VM that returns free memory to its host (free page reporting) each new MiB costs a fault-in (about 2.5 ms
 * here, as much as sending it). The cap is the memory bound: many files uploading at once share the buffers,
 * so part memory stays at size × max however many uploads run.
 */
export class PartBuffers {
  private readonly idle: Buffer[] = [];
  private readonly waiting: ((buf: Buffer) => void)[] = [];
  private created = 0;

  constructor(
    readonly size: number,
    readonly max: number,
  ) {}

  /** A buffer of `size` bytes, once one is free (callers must release it, also on failure). */
  acquire(): Promise<Buffer> {
    const buf = this.idle.pop();
    if (buf) return Promise.resolve(buf);
    if (this.created < this.max) {
      this.created++;
      // Outside Node's shared slab: a part buffer lives for the driver's life.
      return Promise.resolve(Buffer.allocUnsafeSlow(this.size));
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(buf: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(buf);
    else this.idle.push(buf);
  }

  /** Buffers allocated so far (for tests: never more than `max`). */
  get allocated(): number {
    return this.created;
  }
}
