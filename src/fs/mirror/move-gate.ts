/**
 * Directory moves against the changes made beside them. S3 has no atomic rename: a directory moves key by key
 * (copies, then deletes), so a file uploaded, removed or changed under either name meanwhile was lost, came back
 * under the old name, or failed the move with EIO; so did two moves of overlapping trees (measured: six processes
 * changing one small tree, 13 of their renames failed and 150 keys were left under names the mount no longer
 * showed).
 *
 * So:
 * - a change to a path under a moving directory waits until the move is over, and then applies where that path
 *   went: the kernel named it by its parent's inode, which the move took along (`mkdir x/a` waiting on `mv x y`
 *   makes `y/a`);
 * - a move begins once the changes already running under its two names have ended;
 * - moves run one at a time. A move that waited for another one whose move touched its own names starts over
 *   from where those names went (`Moved`), as if it had come after it.
 */

export interface Change {
  paths: readonly string[];
  /** This change is a directory move: other moves do not wait for it to end, it waits for them. */
  moving: boolean;
}

interface Move {
  from: string;
  to: string;
  by: Change;
  /** Resolves once the move is over (recorded in the history if it succeeded). */
  done: Promise<void>;
}

/** Thrown by beginMove: another move took this one's names elsewhere meanwhile; the gate runs the change again. */
export class Moved extends Error {}

const under = (path: string, dir: string): boolean => path === dir || path.startsWith(`${dir}/`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class MoveGate {
  private readonly moves = new Set<Move>();
  private readonly changes = new Map<Change, Promise<void>>();
  /** Moves that succeeded, in order (pruned to what running changes may still need). */
  private history: { seq: number; from: string; to: string; by: Change }[] = [];
  private seq = 0;
  private readonly seen = new Map<Change, number>();

  /**
   * Run a change of these paths once no move covers them, with the paths as they are then; moves that begin
   * meanwhile wait for it. `named`: the paths name entries of their parent directories (create, unlink, rename:
   * the kernel sends the parent's inode and a name), so only a moved parent takes them along, not a move of that
   * very entry (`mkdir x` after `mv x y` makes a new `x`); otherwise they name the file itself (chmod, open).
   */
  async change<const P extends readonly string[], T>(paths: P, named: boolean, fn: (paths: P, self: Change) => Promise<T>): Promise<T> {
    const self: Change = { paths, moving: false };
    this.seen.set(self, this.seq);
    try {
      for (;;) {
        for (let m = this.covering(self.paths); m; m = this.covering(self.paths)) await m.done;
        this.follow(self, named);
        let end!: () => void;
        this.changes.set(self, new Promise<void>((resolve) => (end = resolve)));
        try {
          return await fn(self.paths as P, self);
        } catch (err) {
          if (!(err instanceof Moved)) throw err;
        } finally {
          this.changes.delete(self);
          end();
        }
        self.moving = false;
      }
    } finally {
      this.seen.delete(self);
      this.prune();
    }
  }

  /**
   * Begin moving directory `from` to `to`, within `self` (the rename's own change). Returns once no other move
   * runs and the other changes running under either name have ended; call the returned function when the move is
   * over, with whether it succeeded. Throws Moved if a move that ran meanwhile took `self`'s names elsewhere.
   */
  async beginMove(self: Change, from: string, to: string): Promise<(moved: boolean) => void> {
    // Marked first: a move this one waits for must not wait for it in turn.
    self.moving = true;
    while ([...this.moves].some((m) => m.by !== self)) await Promise.all([...this.moves].map((m) => m.done));
    if (this.history.some((h) => h.seq > this.seen.get(self)! && h.by !== self && self.paths.some((p) => under(p, h.from)))) throw new Moved();
    let end!: () => void;
    const move: Move = { from, to, by: self, done: new Promise<void>((resolve) => (end = resolve)) };
    this.moves.add(move);
    // Changes under its names that began before it: their promises end when they do (polled, since one of them
    // may become a move meanwhile, which no longer counts).
    const running = (): boolean => [...this.changes.keys()].some((c) => !c.moving && c.paths.some((p) => under(p, from) || under(p, to)));
    while (running()) await sleep(2);
    return (moved) => {
      if (moved) this.history.push({ seq: ++this.seq, from, to, by: self });
      this.seen.set(self, this.seq);
      this.moves.delete(move);
      end();
    };
  }

  /** Carry a change's paths along the moves that succeeded since it last looked (its own excepted). */
  private follow(self: Change, named: boolean): void {
    const since = this.seen.get(self)!;
    let paths = self.paths;
    for (const h of this.history) {
      if (h.seq <= since || h.by === self) continue;
      paths = paths.map((p) => (under(p, h.from) && !(named && p === h.from) ? h.to + p.slice(h.from.length) : p));
    }
    self.paths = paths;
    this.seen.set(self, this.seq);
  }

  private prune(): void {
    if (!this.history.length) return;
    const oldest = Math.min(...this.seen.values(), this.seq);
    if (this.history.length && this.history[0]!.seq <= oldest) this.history = this.history.filter((h) => h.seq > oldest);
  }

  private covering(paths: readonly string[]): Move | undefined {
    if (this.moves.size === 0) return undefined;
    for (const m of this.moves) if (paths.some((p) => under(p, m.from) || under(p, m.to))) return m;
    return undefined;
  }
}
