/**
 * The in-memory block map of one open file: each block's state, when it was last used (for LRU eviction of
 * open files' blocks) and how many reads or writes are using it right now (such a block is never evicted: a read
 * could return a punched hole, and a write could mark dirty a block whose old bytes it fetched and lost).
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
  private readonly inUse = new Map<number, number>();
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

  /** A read or write of blocks [first, last] begins: none of them may be evicted until it ends (release). */
  hold(first: number, last: number): void {
    for (let b = first; b <= last; b++) this.inUse.set(b, (this.inUse.get(b) ?? 0) + 1);
  }

  release(first: number, last: number): void {
    for (let b = first; b <= last; b++) {
      const n = (this.inUse.get(b) ?? 1) - 1;
      if (n === 0) this.inUse.delete(b);
      else this.inUse.set(b, n);
    }
  }

  isHeld(b: number): boolean {
    return this.inUse.has(b);
  }

  count(state: BlockStateCode, blocks: number): number {
    let n = 0;
    for (let b = 0; b < blocks && b < this.states.length; b++) if (this.states[b] === state) n++;
    return n;
  }
}
