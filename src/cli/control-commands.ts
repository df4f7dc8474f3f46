/** `s3vault pin | unpin | status | flush`: requests to the process serving a mount, over its control socket. */
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import type { Conflict, FileStatus } from '../cache/vault.js';
import type { QueueEntry } from '../cache/writeback.js';
import { FILE_STATUS } from '../cache/constants.js';
import { rwresultName } from '../storage/rwresult.js';
import type { Progress } from '../fs/mirror/maintenance.js';
import { controlRequest, type ControlRequest } from './control.js';
import { EXIT } from './exit-codes.js';
import { controlSocket, findMount } from './mountpoint.js';
import { printable } from './printable.js';

const MiB = 1024 * 1024;
const STATUS_NAMES: Record<number, string> = { [FILE_STATUS.CHANGED]: 'changed', [FILE_STATUS.UNCHANGED]: 'cached', [FILE_STATUS.LOCAL]: 'local', [FILE_STATUS.ORPHAN]: 'pending', [FILE_STATUS.OPEN]: 'open' };

class CliError extends Error {}

function target(p: string): { socket: string; inner: string; mountpoint: string } {
  const m = findMount(p);
  if (!m) throw new CliError(`${p} is not inside an s3vault mount`);
  return { socket: controlSocket(m.mountpoint), inner: m.inner, mountpoint: m.mountpoint };
}

/** A progress bar on a terminal; on a pipe, nothing until the summary line. */
function bar(label: string) {
  const b = new cliProgress.SingleBar(
    { format: `${label} {bar} {percentage}% | {doneMiB}/{totalMiB} MiB | {files}/{totalFiles} files | ETA {eta_formatted} | {current}`, hideCursor: true, noTTYOutput: false },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p: Progress): void {
      const payload = { doneMiB: (p.doneBytes / MiB).toFixed(1), totalMiB: (p.totalBytes / MiB).toFixed(1), files: p.files, totalFiles: p.totalFiles, current: p.current };
      if (!started) {
        b.start(Math.max(1, p.totalBytes), 0, payload);
        started = true;
      }
      b.update(p.doneBytes, payload);
    },
    stop(): void {
      if (started) b.stop();
    },
  };
}

async function request(op: ControlRequest['op'], p: string, label?: string, extra: Partial<ControlRequest> = {}): Promise<unknown> {
  const t = target(p);
  const progress = label ? bar(label) : undefined;
  try {
    return await controlRequest(t.socket, { op, path: t.inner, ...extra }, (pr) => progress?.update(pr));
  } finally {
    progress?.stop();
  }
}

/** Ask the process serving a mount to flush (or not) and unmount; false if no process answers there. */
export async function unmountThroughControl(mountpoint: string, flush: boolean, lazy = false): Promise<{ uploaded: number; left: number; busy?: boolean } | false> {
  try {
    return (await request('unmount', mountpoint, flush ? 'flush' : undefined, { flush, lazy })) as { uploaded: number; left: number; busy?: boolean };
  } catch (err) {
    if (err instanceof CliError || /cannot reach/.test((err as Error).message)) return false;
    throw err;
  }
}

interface StatusReply {
  files: FileStatus[];
  pending: QueueEntry[];
  deletes?: number;
  conflicts: Conflict[];
  offline: boolean;
}

function formatQueue(r: StatusReply): string {
  const out: string[] = [];
  if (r.offline) out.push('storage: OFFLINE (changes are kept in the vault and upload when it returns)');
  if (r.pending.length) {
    out.push('pending uploads:');
    for (const q of r.pending) {
      const when = q.state === 'waiting' ? `in ${Math.max(0, Math.round((q.due - Date.now()) / 1000))} s` : q.state;
      out.push(`  ${printable(q.key)}  ${q.size} bytes  ${when}${q.attempts ? `  attempt ${q.attempts + 1}` : ''}${q.lastError ? `  last error: ${q.lastError}` : ''}`);
    }
  }
  if (r.deletes) out.push(`pending deletes: ${r.deletes} (removed here, sent to storage batched)`);
  if (r.conflicts.length) {
    out.push('conflicts (the object changed in storage while it had local changes):');
    for (const c of r.conflicts) out.push(`  ${printable(c.key)}: ${c.conflictKey ? `local version saved as ${printable(c.conflictKey)}` : c.policy} (${new Date(c.atMs).toISOString()})`);
  }
  return out.join('\n');
}

function formatStatus(rows: FileStatus[]): string {
  const head = ['STATE', 'SIZE', 'CACHED', 'DIRTY', 'PINNED', 'LAST ERROR', 'KEY'];
  const lines = rows.map((r) => [
    STATUS_NAMES[r.status] ?? String(r.status),
    String(r.size),
    String(r.cachedBytes),
    String(r.dirtyBytes),
    r.pinned ? 'yes' : 'no',
    r.lastError ? rwresultName(r.lastError) : '-',
    printable(r.key),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [head, ...lines].map((l) => l.map((c, i) => (i === l.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

export function addControlCommands(program: Command, setResult: (p: Promise<number>) => void): void {
  const wrap = (fn: () => Promise<number>): void =>
    setResult(
      fn().catch((err: unknown) => {
        process.stderr.write(`s3vault: error: ${(err as Error).message}\n`);
        return err instanceof CliError ? EXIT.USAGE : EXIT.ERROR;
      }),
    );

  program
    .command('pin')
    .description('fetch files or whole trees into the vault and keep them there (never evicted, readable offline)')
    .argument('<paths...>', 'files or directories inside a mount')
    .action((paths: string[]) =>
      wrap(async () => {
        for (const p of paths) {
          const r = (await request('pin', p, 'pin')) as { files: number; bytes: number };
          process.stdout.write(`s3vault: pinned ${r.files} files (${(r.bytes / MiB).toFixed(1)} MiB) under ${p}\n`);
        }
        return EXIT.OK;
      }),
    );

  program
    .command('unpin')
    .description('let pinned files be evicted again')
    .argument('<paths...>', 'files or directories inside a mount')
    .action((paths: string[]) =>
      wrap(async () => {
        for (const p of paths) {
          const r = (await request('unpin', p)) as { files: number };
          process.stdout.write(`s3vault: unpinned ${r.files} files under ${p}\n`);
        }
        return EXIT.OK;
      }),
    );

  program
    .command('status')
    .description('per cached file: state, size, cached and changed bytes, pinned, last transfer error')
    .argument('[path]', 'a file or directory inside a mount', '.')
    .option('--json', 'print JSON')
    .action((p: string, flags: { json?: boolean }) =>
      wrap(async () => {
        const reply = (await request('status', p)) as StatusReply;
        if (flags.json) process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`);
        else {
          const queue = formatQueue(reply);
          process.stdout.write(`${formatStatus(reply.files)}\n${queue ? `\n${queue}\n` : ''}`);
        }
        return EXIT.OK;
      }),
    );

  program
    .command('reset-errors')
    .description('clear the error state of files whose uploads stopped (FILE_FAILURE) so they are tried again')
    .argument('[path]', 'a file or directory inside a mount', '.')
    .action((p: string) =>
      wrap(async () => {
        const r = (await request('reset-errors', p)) as { files: number };
        process.stdout.write(`s3vault: ${r.files} files had an error; they will be tried again\n`);
        return EXIT.OK;
      }),
    );

  program
    .command('refresh')
    .description('forget what the mount knows about a path and everything under it (names, attributes, listings, kernel caches), so changes made by other tools show at once')
    .argument('[path]', 'a file or directory inside a mount', '.')
    .action((p: string) =>
      wrap(async () => {
        await request('refresh', p);
        process.stdout.write(`s3vault: refreshed ${p}\n`);
        return EXIT.OK;
      }),
    );

  program
    .command('versions')
    .description('list the stored versions of a file (S3 versioning): time, size, version id; the same as <dir>/.s3vault-versions/<name>/')
    .argument('<path>', 'a file inside a mount')
    .option('--json', 'machine-readable output')
    .action((p: string, flags: { json?: boolean }) =>
      wrap(async () => {
        const r = (await request('versions', p)) as { versions: { time: string; size: number; versionId: string; latest: boolean; deleted: boolean }[] };
        if (flags.json) process.stdout.write(`${JSON.stringify(r.versions, null, 2)}\n`);
        else {
          const rows = [['TIME', 'SIZE', 'VERSION ID', ''], ...r.versions.map((v) => [v.time, v.deleted ? '-' : String(v.size), v.versionId, [v.latest ? 'current' : '', v.deleted ? 'deleted' : ''].filter(Boolean).join(', ')])];
          const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
          process.stdout.write(`${rows.map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')}\n`);
        }
        return EXIT.OK;
      }),
    );

  program
    .command('restore')
    .description('make the version a file had at an instant its current version again (a server-side copy: no download)')
    .argument('<path>', 'a file inside a mount')
    .requiredOption('--as-of <time>', 'the instant, e.g. 2026-11-01T12:00:00Z')
    .action((p: string, flags: { asOf: string }) =>
      wrap(async () => {
        if (Number.isNaN(Date.parse(flags.asOf))) throw new CliError(`--as-of: not a date and time: ${flags.asOf} (e.g. 2026-11-01T12:00:00Z)`);
        const r = (await request('restore', p, undefined, { asOf: new Date(flags.asOf).toISOString() })) as { time: string; size: number; versionId: string };
        process.stdout.write(`s3vault: restored ${p} to its version of ${r.time} (${r.size} bytes, version ${r.versionId})\n`);
        return EXIT.OK;
      }),
    );

  program
    .command('flush')
    .description('upload every pending change under a path now (instead of after the flush delay)')
    .argument('[path]', 'a file or directory inside a mount', '.')
    .option('--wait', 'wait until they are in storage, with a progress bar')
    .action((p: string, flags: { wait?: boolean }) =>
      wrap(async () => {
        const r = (await request('flush', p, flags.wait ? 'flush' : undefined, { wait: flags.wait === true })) as { files: number; dirs?: number; deletes?: number };
        process.stdout.write(`s3vault: ${flushSummary(r, flags.wait === true)}\n`);
        return EXIT.OK;
      }),
    );
}

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

/** "uploaded 1000 files and 1 directory, deleted 3 objects" (directories: their markers; deletes: journaled ones). */
function flushSummary(r: { files: number; dirs?: number; deletes?: number }, wait: boolean): string {
  const dirs = r.dirs ?? 0;
  const deletes = r.deletes ?? 0;
  const parts: string[] = [];
  if (r.files || dirs) {
    const what = [r.files ? plural(r.files, 'file', 'files') : '', dirs ? plural(dirs, 'directory', 'directories') : ''].filter(Boolean).join(' and ');
    parts.push(wait ? `uploaded ${what}` : `${what} queued for upload now`);
  }
  if (deletes) parts.push(wait ? `deleted ${plural(deletes, 'object', 'objects')}` : `${plural(deletes, 'delete', 'deletes')} sent now`);
  return parts.length ? parts.join(', ') : 'nothing to upload';
}
