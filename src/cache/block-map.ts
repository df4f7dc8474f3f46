/**
 * The in-memory block map of one open file: each block's state, when it was last used (for LRU eviction of
 * open files' blocks) and how many reads are copying it out right now (such a block is never evicted, or a
 * read could return a punched hole).
 */
export const BLOCK = { ABSENT: 0, CLEAN: 1, DIRTY: 2 } as const;
export type BlockStateCode = (typeof BLOCK)[keyof typeof BLOCK];

let clock = 1;
/** A global use counter: larger is more recent. */
export function nextTick(): number {
  return clock++;
}

export class BlockMap {
  private states: Uint8Array;
  private used: Float64Array;
  private readonly reading = new Map<number, number>();
  /** How many blocks are not absent. */
  present = 0;

  constructor(states: Uint8Array) {
    this.states = states;
    this.used = new Float64Array(states.length);
    for (const s of states) if (s !== BLOCK.ABSENT) this.present++;
  }

  get(b: number): BlockStateCode {
    return (this.states[b] ?? BLOCK.ABSENT) as BlockStateCode;
  }

  set(b: number, state: BlockStateCode): void {
    this.grow(b + 1);
    if ((this.states[b] === BLOCK.ABSENT) !== (state === BLOCK.ABSENT)) this.present += state === BLOCK.ABSENT ? -1 : 1;
    this.states[b] = state;
    this.used[b] = nextTick();
  }

  touch(first: number, last: number): void {
    const t = nextTick();
    for (let b = first; b <= last && b < this.used.length; b++) this.used[b] = t;
  }

  lastUse(b: number): number {
    return this.used[b] ?? 0;
  }

  /** Forget every block from `from` on (truncation). */
  clearFrom(from: number): void {
    for (let b = from; b < this.states.length; b++) if (this.states[b] !== BLOCK.ABSENT) this.present--;
    if (from < this.states.length) this.states.fill(BLOCK.ABSENT, from);
  }

  grow(blocks: number): void {
    if (blocks <= this.states.length) return;
    const n = Math.max(blocks, this.states.length * 2);
    const states = new Uint8Array(n);
    states.set(this.states);
    const used = new Float64Array(n);
    used.set(this.used);
    this.states = states;
    this.used = used;
  }

  beginRead(first: number, last: number): void {
    for (let b = first; b <= last; b++) this.reading.set(b, (this.reading.get(b) ?? 0) + 1);
  }

  endRead(first: number, last: number): void {
    for (let b = first; b <= last; b++) {
      const n = (this.reading.get(b) ?? 1) - 1;
      if (n === 0) this.reading.delete(b);
      else this.reading.set(b, n);
    }
  }

  isBeingRead(b: number): boolean {
    return this.reading.has(b);
  }

  count(state: BlockStateCode, blocks: number): number {
    let n = 0;
    for (let b = 0; b < blocks && b < this.states.length; b++) if (this.states[b] === state) n++;
    return n;
  }
}
