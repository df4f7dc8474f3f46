/**
 * WAL checkpoints off the main thread. SQLite's automatic checkpoint runs inside the commit that crosses 1000 WAL
 * pages, on the connection that commits: the vault's, on the main thread, which also serves every FUSE request.
 * Each one copies the WAL into the database and fsyncs both, and every request waits meanwhile (a `cp -r` of 1000
 * small files made 12 of them; without them it ran 10% faster, alternating by hand).
 *
 * Here a worker thread with its own connection runs passive checkpoints on a timer: they copy what is committed
 * without taking the writer's lock, so the main thread never waits for them. A passive checkpoint cannot rewind
 * the WAL while commits keep coming, so when the WAL passes `maxWalBytes` the worker asks the main thread for one
 * checkpoint of its own (RESTART, between two requests): it has only the pages committed since the worker's last
 * pass left to copy, and the next commit starts the WAL over (its file cut back to `maxWalBytes`). Durability is
 * unchanged: a commit is what makes a change survive, in the WAL, whoever copies it later.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Db } from './db.js';
import type { Logger } from '../log.js';

export interface CheckpointerOptions {
  /** How often the worker checkpoints (default 250 ms). */
  intervalMs?: number;
  /** WAL size past which the main thread checkpoints once and the WAL starts over (default 64 MiB). */
  maxWalBytes?: number;
}

// Plain JavaScript run as the worker (eval): the same code under vitest (TypeScript sources) and from dist/.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
let asked = false;
let failing = false;
const pass = () => {
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    if (failing) { failing = false; parentPort.postMessage({ ok: true }); }
    const walBytes = r.log * workerData.pageSize;
    if (walBytes > workerData.maxWalBytes && !asked) { asked = true; parentPort.postMessage({ restart: walBytes }); }
    else if (walBytes <= workerData.maxWalBytes) asked = false;
  } catch (err) {
    failing = true;
    parentPort.postMessage({ error: String(err && err.message || err) });
  }
};
const timer = setInterval(pass, workerData.intervalMs);
parentPort.postMessage({ ready: true });
parentPort.on('message', (m) => {
  if (m === 'restarted') asked = false;
  if (m === 'stop') { clearInterval(timer); db.close(); parentPort.close(); }
});
`;

export class Checkpointer {
  private stopped = false;
  /** The last failure reported, until a pass succeeds: each is logged once. */
  private lastError: string | undefined;
  private readonly exited: Promise<void>;
  /** Resolves once the worker has its connection and its timer runs (tests). */
  readonly ready: Promise<void>;

  private constructor(
    private readonly db: Db,
    private readonly worker: Worker,
    private readonly log: Logger,
  ) {
    // The worker's timer alone must not keep a process alive that has nothing else to do.
    worker.unref();
    let isReady: () => void;
    this.ready = new Promise((resolve) => (isReady = resolve));
    worker.on('message', (m: { ready?: boolean; restart?: number; error?: string; ok?: boolean }) => {
      if (m.ready) isReady();
      else if (m.restart !== undefined) this.restart(m.restart);
      else if (m.error) {
        // Once per error, not per pass (four a second while the disk is full).
        if (m.error !== this.lastError) this.log.warn({ err: m.error }, 'vault checkpoint failed; will try again');
        this.lastError = m.error;
      } else if (m.ok) this.lastError = undefined;
    });
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    worker.on('error', (err) => this.fallBack(err));
  }

  /** Checkpoints move to a worker thread; if it cannot start, SQLite's own stay (and the vault works as before). */
  static start(db: Db, file: string, log: Logger, options: CheckpointerOptions = {}): Checkpointer | undefined {
    const maxWalBytes = options.maxWalBytes ?? 64 * 1024 * 1024;
    let worker: Worker;
    try {
      const pageSize = db.pragma('page_size', { simple: true }) as number;
      const driver = createRequire(import.meta.url).resolve('better-sqlite3');
      worker = new Worker(WORKER, { eval: true, workerData: { driver, file, pageSize, maxWalBytes, intervalMs: options.intervalMs ?? 250 } });
    } catch (err) {
      log.warn({ err }, 'vault checkpoint thread did not start: checkpoints stay on the main thread');
      return undefined;
    }
    db.pragma('wal_autocheckpoint = 0');
    // After the WAL starts over, its file is cut back to this size instead of keeping its largest.
    db.pragma(`journal_size_limit = ${maxWalBytes}`);
    return new Checkpointer(db, worker, log);
  }

  private restart(walBytes: number): void {
    if (this.stopped) return;
    try {
      // RESTART: copies what the worker has not (the pages of the last few commits), waiting for the worker's pass
      // if one runs, and leaves the WAL to start over at the next commit.
      this.db.pragma('wal_checkpoint(RESTART)');
      this.log.debug({ walBytes }, 'vault WAL checkpointed on the main thread: it starts over at the next commit');
    } catch (err) {
      this.log.warn({ err }, 'vault checkpoint failed; will try again');
    }
    this.worker.postMessage('restarted');
  }

  /** The worker died: SQLite's own checkpoints take over again, on the main thread. */
  private fallBack(err: Error): void {
    if (this.stopped) return;
    this.stopped = true;
    this.log.warn({ err }, 'vault checkpoint thread failed: checkpoints run on the main thread again');
    this.db.pragma('wal_autocheckpoint = 1000');
  }

  /** Stop the worker and wait for its connection to close (before the vault's own, which checkpoints last). */
  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      // Held by the wait below: an unreferenced worker would let the process exit before its connection closed.
      this.worker.ref();
      this.worker.postMessage('stop');
    }
    await this.exited;
  }
}
