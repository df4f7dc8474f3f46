/**
 * The `s3vault` command. Only this folder parses flags; everything else takes a validated Config.
 *   s3vault                      embedded default: local S3 server + bucket "s3vault" mounted at ./mnt
 *   s3vault mount BUCKET[/PREFIX] MOUNTPOINT
 *   s3vault unmount MOUNTPOINT
 *   s3vault server               the embedded S3 server alone, in the foreground
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
// Not config.js here (its schema library alone takes 0.15 s to load): `flush`, `status` and `unmount`, which
// scripts run after every batch of work, start without it. The mount commands load it.
import { ConfigError } from '../config-error.js';
import { lastLines, startEmbeddedServer } from '../storage/embedded-server.js';
import { runInBackground, notifyParent } from './daemon.js';
import { addFolderCommand } from './folder-command.js';
import { EXIT } from './exit-codes.js';
import type { MountJob } from './mount-runner.js';
import { isMounted, mountOwner, mountUsers } from './mountpoint.js';
import { addVaultCommands } from './vault-commands.js';
import { addControlCommands, unmountThroughControl } from './control-commands.js';
import { VaultError } from '../cache/errors.js';
import { spawnSync } from 'node:child_process';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function fail(message: string, code: number = EXIT.ERROR): never {
  process.stderr.write(`s3vault: error: ${message}\n`);
  process.exit(code);
}

interface MountFlags {
  endpoint?: string;
  region?: string;
  profile?: string;
  vault?: string;
  readOnly?: boolean;
  foreground?: boolean;
  verbose?: boolean;
  config?: string;
  allowOther?: boolean;
  notifyFd?: string;
  logFile?: string;
  cacheSize?: string;
  sync?: string;
  conflict?: string;
  flushDelay?: string;
  flushMaxDelay?: string;
  eventTimeout?: string;
  capacity?: string;
  asOf?: string;
  listingTtl?: string;
  listingAttributes?: boolean;
  passthrough?: boolean;
  streamUploads?: boolean;
}

type ConfigModule = typeof import('../config.js');

/** The config every mount flag contributes (validated by resolveConfig). */
function mountFlagsConfig({ parseSize }: ConfigModule, flags: MountFlags) {
  return {
    vault: {
      dir: flags.vault && path.resolve(flags.vault),
      sizeLimit: flags.cacheSize && parseSize(flags.cacheSize),
      conflictPolicy: flags.conflict,
      flushAfterCloseMs: flags.flushDelay === undefined ? undefined : Number(flags.flushDelay),
      flushMaxDelayMs: flags.flushMaxDelay === undefined ? undefined : Number(flags.flushMaxDelay),
      streamUploads: flags.streamUploads,
    },
    fs: { readOnly: flags.readOnly, allowOther: flags.allowOther, sync: flags.sync, eventTimeoutMs: flags.eventTimeout === undefined ? undefined : Number(flags.eventTimeout), capacityBytes: flags.capacity === undefined ? undefined : parseSize(flags.capacity), asOf: flags.asOf, listingTtlMs: flags.listingTtl === undefined ? undefined : Number(flags.listingTtl) * 1000, listingAttributes: flags.listingAttributes, passthrough: flags.passthrough === false ? false : undefined },
  };
}

function splitBucket(spec: string): { bucket: string; prefix: string } {
  const clean = spec.replace(/^s3:\/\//, '');
  const slash = clean.indexOf('/');
  return slash < 0 ? { bucket: clean, prefix: '' } : { bucket: clean.slice(0, slash), prefix: clean.slice(slash + 1).replace(/\/+$/, '') };
}

/** Background unless --foreground: the same command runs again in a detached child. */
async function mountCommand(argv: string[], flags: MountFlags, logFile: string, job: () => MountJob): Promise<number> {
  if (!flags.foreground) {
    const msg = await runInBackground(argv, logFile);
    if (!msg.ok) fail(msg.message, msg.exit);
    process.stdout.write(`s3vault: ${msg.message}\n  log: ${logFile}\n`);
    return EXIT.OK;
  }
  const fd = flags.notifyFd !== undefined ? Number(flags.notifyFd) : undefined;
  const j = job();
  if (fd !== undefined) j.notify = (m) => notifyParent(fd, m);
  else j.notify = (m) => (m.ok ? process.stdout.write(`s3vault: ${m.message} (Ctrl-C to unmount)\n`) : process.stderr.write(`s3vault: error: ${m.message}\n`));
  // Loaded here: the S3 client and the FUSE binding are heavy, and only a mount needs them.
  const { runMount } = await import('./mount-runner.js');
  return runMount(j);
}

function addMountOptions(cmd: Command): Command {
  return cmd
    .option('--vault <dir>', 'vault directory (default: ~/.cache/s3vault/vaults/<bucket>-<id>)')
    .option('--cache-size <size>', 'vault size limit, e.g. 300M, 20G (default 300M); changed and pinned data may exceed it')
    .option('--sync <mode>', 'vault: fsync is durable in the vault (default); remote: fsync waits until the file is in S3')
    .option('--conflict <policy>', 'when the object changed in S3 since it was cached: keep-both (default), local-wins, remote-wins')
    .option('--flush-delay <ms>', 'upload a changed file this long after its last close (default 2000)')
    .option('--flush-max-delay <ms>', 'while other changed files keep closing (a copy, an unpack), wait for them to stop, but no longer than this after the close (default 30000; at most --flush-delay: never wait)')
    .option('--read-only', 'mount read-only: every change fails with EROFS, and no request that changes the bucket is sent')
    .option('--as-of <time>', 'show a versioned bucket as it was at this instant (e.g. 2026-11-01T12:00:00Z); read-only')
    .option('--listing-ttl <seconds>', 'how long directory listings kept in the vault are used without asking S3 (default 60); longer makes walks of large trees free')
    .option('--no-passthrough', 'serve every read through s3vault, even of files all in the vault (default: the kernel reads those straight from the vault by FUSE passthrough, Linux 6.9 or later)')
    .option('--stream-uploads', 'send large files to S3 part by part while they are written, so little is left to send at close (their objects carry no mtime header unless one is set explicitly, as cp -p does)')
    .option('--listing-attributes', 'show files known only from a listing with its size and time and the default mode and owner, without a HEAD per file (fast ls -l of large directories; symlinks and s3fs/rclone metadata show once a file is opened)')
    .option('--capacity <size>', 'the size df reports for the mount, e.g. 10T (default 1P; S3 has no limit)')
    .option('--event-timeout <ms>', 'fail a file operation with EIO after this long without progress (0: never, the default; else >= 3000)')
    .option('--foreground', 'stay in the foreground (default: run in the background once mounted)')
    .option('--verbose', 'debug logging')
    .option('--config <file>', 'JSON config file (default: ~/.config/s3vault/config.json if present)')
    .option('--allow-other', 'let other users access the mount (FUSE allow_other)')
    .addOption(new Option('--notify-fd <fd>').hideHelp())
    .option('--log-file <file>', 'log file of a background mount');
}

/** Running (a zombie — exited, waiting for its parent to reap it — counts as gone). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('s3vault')
    .description('Mount an S3 bucket as a local drive, through a SQLite-journaled local vault.\nWith no command: start a local S3 server and mount its bucket at ./mnt.')
    .version(pkg.version, '-V, --version')
    .exitOverride()
    .showHelpAfterError();

  let result: Promise<number> = Promise.resolve(EXIT.OK);

  addMountOptions(
    program
      .command('up', { isDefault: true })
      .description('the embedded default: start a local S3-compatible server (s3rver), create bucket "s3vault", mount it')
      .option('--dir <dir>', 'state directory: server data, vault, log', '.s3vault')
      .option('--mountpoint <dir>', 'where to mount', 'mnt'),
  ).action(async (flags: MountFlags & { dir: string; mountpoint: string }) => {
    const cfg = await import('../config.js');
    const { resolveConfig, readConfigFile } = cfg;
    const dir = path.resolve(flags.dir);
    const build = () => {
      const own = mountFlagsConfig(cfg, flags);
      const config = resolveConfig({
        file: readConfigFile(flags.config),
        flags: { ...own, s3: { bucket: 's3vault' }, vault: { ...own.vault, dir: own.vault.dir ?? path.join(dir, 'vault') } },
      });
      return { config, mountpoint: flags.mountpoint, createMountpoint: true, embedded: { dataDir: dir }, verbose: flags.verbose };
    };
    build();
    // The background child runs this same command line (same cwd), plus --foreground.
    result = mountCommand(argv, flags, flags.logFile ?? path.join(dir, 's3vault.log'), build).then((code) => {
      if (code === EXIT.OK && !flags.foreground) process.stdout.write(`  stop it with: ${process.argv[1] ? path.relative(process.cwd(), process.argv[1]) : 's3vault'} unmount ${flags.mountpoint}\n`);
      return code;
    });
  });

  addMountOptions(
    program
      .command('mount')
      .description('mount BUCKET (or BUCKET/PREFIX) at MOUNTPOINT')
      .argument('<bucket>', 'bucket name, optionally with a key prefix: my-bucket/photos')
      .argument('<mountpoint>', 'an existing empty directory')
      .option('--endpoint <url>', 'S3 endpoint URL (env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)')
      .option('--region <region>', 'region (env AWS_REGION / AWS_DEFAULT_REGION)')
      .option('--profile <name>', 'AWS profile (env AWS_PROFILE)'),
  ).action(async (bucketSpec: string, mountpoint: string, flags: MountFlags) => {
    const cfg = await import('../config.js');
    const { resolveConfig, readConfigFile, envConfig } = cfg;
    const { bucket, prefix } = splitBucket(bucketSpec);
    // Validated here too, so a bad flag fails in the foreground, before anything runs in the background.
    const build = () => {
      const config = resolveConfig({
        file: readConfigFile(flags.config),
        env: envConfig(),
        flags: { ...mountFlagsConfig(cfg, flags), s3: { bucket, prefix, endpoint: flags.endpoint, region: flags.region, profile: flags.profile } },
      });
      return { config, mountpoint, verbose: flags.verbose };
    };
    build();
    const logFile = flags.logFile ?? path.join(process.env.HOME ?? '/tmp', '.cache', 's3vault', 'logs', `${bucket}.log`);
    result = mountCommand(argv, flags, logFile, build);
  });

  program
    .command('unmount')
    .alias('umount')
    .description('upload pending changes (with progress), then unmount')
    .argument('<mountpoint>')
    .option('--no-wait', 'unmount at once; pending changes stay in the vault and upload at the next mount')
    .option('--lazy', 'detach it even while files are open in it (umount -l): s3vault serves them until they are closed')
    .option('--timeout <seconds>', 'how long to wait for the process to finish', '600')
    .action((mountpoint: string, flags: { timeout: string; wait: boolean; lazy?: boolean }) => {
      result = unmount(path.resolve(mountpoint), Number(flags.timeout) * 1000, flags.wait, flags.lazy === true);
    });

  program
    .command('server')
    .description('run the embedded S3-compatible server (s3rver) in the foreground')
    .option('--dir <dir>', 'data directory', '.s3vault/s3')
    .option('--port <port>', 'port (0: any free one)', '0')
    .option('--bucket <name...>', 'buckets to create', ['s3vault'])
    .action((flags: { dir: string; port: string; bucket: string[] }) => {
      result = (async () => {
        const server = await startEmbeddedServer({
          dataDir: path.resolve(flags.dir),
          port: Number(flags.port),
          buckets: flags.bucket,
          onExit: ({ code, signal, output, restarted }) =>
            process.stderr.write(`s3vault: the S3 server exited (${signal ?? `code ${code}`}); ${restarted ? 'started again on its port' : 'retrying'}. It printed:\n${lastLines(output)}\n`),
        });
        process.stdout.write(`s3vault: S3 server at ${server.endpoint} (access key S3RVER, secret S3RVER), buckets: ${flags.bucket.join(', ')}; Ctrl-C stops it\n`);
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        await server.stop();
        return EXIT.OK;
      })();
    });

  addVaultCommands(program, (p) => (result = p));
  addFolderCommand(program, (p) => (result = p));
  addControlCommands(program, (p) => (result = p));

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    throw err;
  }
  return result;
}

async function unmount(mountpoint: string, timeoutMs: number, flush: boolean, lazy: boolean): Promise<number> {
  if (!isMounted(mountpoint)) fail(`${mountpoint} is not mounted`, EXIT.MOUNT);
  const pid = mountOwner(mountpoint);
  if (pid === undefined) {
    // No live s3vault behind it (crashed): detach the dead mount.
    const r = spawnSync('fusermount3', ['-u', '-z', mountpoint], { stdio: 'inherit' });
    return r.status === 0 ? EXIT.OK : EXIT.MOUNT;
  }
  const done = await unmountThroughControl(mountpoint, flush, lazy).catch((err: Error) => fail(err.message));
  if (done === false) process.kill(pid, 'SIGTERM');
  else if (done.left) process.stdout.write(`s3vault: ${done.left} changed files stay in the vault; they upload at the next mount\n`);
  if (done !== false && done.busy) {
    const who = mountUsers(mountpoint);
    fail(
      `${mountpoint} is busy, still mounted${flush && !done.left ? ' (its changes are uploaded)' : ''}: ${who.length ? `in use by ${who.slice(0, 8).join(', ')}${who.length > 8 ? ', …' : ''}` : 'a file is open in it or a process works in it'}. Close them and retry, or detach it now with --lazy`,
      EXIT.MOUNT,
    );
  }
  const deadline = Date.now() + timeoutMs;
  let detachedAt: number | undefined;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    if (!processAlive(pid) && !isMounted(mountpoint)) {
      process.stdout.write(`s3vault: unmounted ${mountpoint}\n`);
      return EXIT.OK;
    }
    // Detached, and the process still there after a moment: files stay open in the detached mount.
    if (lazy && !isMounted(mountpoint) && Date.now() - (detachedAt ??= Date.now()) > 2000) {
      process.stdout.write(`s3vault: detached ${mountpoint}; process ${pid} serves the files still open there and ends when they are closed\n`);
      return EXIT.OK;
    }
  }
  fail(`s3vault process ${pid} did not finish unmounting ${mountpoint} within ${timeoutMs / 1000} s`, EXIT.MOUNT);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof ConfigError) fail(err.message, EXIT.USAGE);
    if (err instanceof VaultError) fail(err.message, EXIT.VAULT);
    fail(err instanceof Error ? err.message : String(err));
  },
);
