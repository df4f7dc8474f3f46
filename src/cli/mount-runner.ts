/**
 * The mount job, in the foreground process that serves FUSE: check everything that can be checked before
 * mounting (mountpoint, FUSE, storage, vault), mount, serve until unmounted or signalled, then flush and
 * close every layer in order. Every failure becomes one line and an exit code (exit-codes.ts).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { VaultError } from '../cache/errors.js';
import { Vault } from '../cache/vault.js';
import { ConfigError, type Config } from '../config.js';
import { FuseSession } from '../fs/fuse/session.js';
import { FuseUnavailableError, loadFuse } from '../fs/fuse/native.js';
import { encodeMeta, objectMetaFor } from '../fs/mirror/meta.js';
import { S3Mirror } from '../fs/mirror/mirror.js';
import { AsOfStorage } from '../storage/as-of.js';
import { ReadOnlyStorage } from '../storage/read-only.js';
import type { StorageDriver } from '../storage/driver.js';
import { EventDispatcher } from '../fs/cbfs/dispatcher.js';
import { createLogger, type Logger } from '../log.js';
import { EMBEDDED_CREDENTIALS, EMBEDDED_NAME_MAX, lastLines, startEmbeddedServer, type EmbeddedServer } from '../storage/embedded-server.js';
import { StorageError } from '../storage/rwresult.js';
import { S3Storage } from '../storage/s3.js';
import { PoweredStorage } from '../storage/power.js';
import { Maintenance } from '../fs/mirror/maintenance.js';
import { ENUM_MODE } from '../cache/constants.js';
import { startControlServer, type ControlServer } from './control.js';
import { EXIT } from './exit-codes.js';
import { checkMountpoint, MountpointError, registerMount, unregisterMount } from './mountpoint.js';

export interface MountJob {
  config: Config;
  mountpoint: string;
  createMountpoint?: boolean;
  /** Start the embedded S3 server first (data under dataDir) and mount its bucket. */
  embedded?: { dataDir: string };
  verbose?: boolean;
  /** Told once: mounted (ok) or the reason it could not be. */
  notify?: (msg: { ok: boolean; message: string; exit: number }) => void;
}

/** Has this vault served this storage before (so an offline mount has something to show)? */
function vaultKnows(dir: string, where: string): boolean {
  return Vault.peekInfo(dir, 'storage') === where;
}

const FOREVER = 100 * 365 * 24 * 3600 * 1000;

export function defaultVaultDir(config: Config): string {
  // A point-in-time view gets a vault of its own (its data is keyed by version anyway).
  const asOf = config.fs.asOf ? `|${new Date(config.fs.asOf).toISOString()}` : '';
  const id = createHash('sha1').update(`${config.s3.endpoint ?? ''}|${config.s3.bucket}|${config.s3.prefix}${asOf}`).digest('hex').slice(0, 12);
  return path.join(os.homedir(), '.cache', 's3vault', 'vaults', `${config.s3.bucket}-${id}`);
}

/** One line for the user, and the exit code, for anything that stops a mount. */
export function explain(err: unknown, where: string): { message: string; exit: number } {
  if (err instanceof MountpointError || err instanceof FuseUnavailableError) return { message: err.message, exit: EXIT.MOUNT };
  if (err instanceof StorageError) return { message: `cannot use ${where}: ${err.detail}`, exit: EXIT.STORAGE };
  if (err instanceof VaultError) return { message: err.message, exit: EXIT.VAULT };
  if (err instanceof ConfigError) return { message: err.message, exit: EXIT.USAGE };
  return { message: (err as Error)?.message ?? String(err), exit: EXIT.ERROR };
}

export async function runMount(job: MountJob): Promise<number> {
  const log: Logger = createLogger({ verbose: job.verbose });
  const config = structuredClone(job.config);
  let server: EmbeddedServer | undefined;
  let s3: S3Storage | undefined;
  let storage: PoweredStorage | undefined;
  let vault: Vault | undefined;
  let session: FuseSession | undefined;
  let mountpoint: string | undefined;
  let control: ControlServer | undefined;
  /** A second signal: stop waiting for uploads, at the unmount and at the vault's close. */
  let forced = false;
  let where = `s3://${config.s3.bucket}/${config.s3.prefix}`;
  const notify = (ok: boolean, message: string, exit: number): void => {
    job.notify?.({ ok, message, exit });
    job.notify = undefined;
  };
  try {
    mountpoint = checkMountpoint(job.mountpoint, job.createMountpoint);
    loadFuse();
    if (job.embedded) {
      server = await startEmbeddedServer({
        dataDir: path.join(job.embedded.dataDir, 's3'),
        buckets: [config.s3.bucket],
        onExit: ({ code, signal, output, restarted }) =>
          log.warn({ code, signal, lastOutput: lastLines(output) }, restarted ? 'embedded S3 server exited unexpectedly: started again on its port (uploads resume)' : 'embedded S3 server exited unexpectedly and could not be started again yet: retrying'),
      });
      config.s3.endpoint = server.endpoint;
      config.s3.credentials = EMBEDDED_CREDENTIALS;
      log.info({ endpoint: server.endpoint, pid: server.pid }, 'embedded S3 server started');
    }
    s3 = new S3Storage(config.s3);
    const asOf = config.fs.asOf ? new Date(config.fs.asOf) : undefined;
    if (asOf) config.fs.readOnly = true;
    // Read-only mounts send no request that changes the bucket: the driver refuses them before they leave.
    const base: StorageDriver = asOf ? new AsOfStorage(s3, asOf) : config.fs.readOnly ? new ReadOnlyStorage(s3) : s3;
    storage = new PoweredStorage(base);
    where = storage.description;
    // What the vault remembers it served. The embedded server takes a free port at every start: it is known by its
    // data directory instead, so its stored listings survive a restart of the quick start.
    const served = server && job.embedded ? where.replace(server.endpoint, `embedded server, data in ${path.join(job.embedded.dataDir, 's3')}`) : where;
    const vaultDir = config.vault.dir ?? defaultVaultDir(config);
    try {
      await base.probe();
    } catch (err) {
      // Unreachable, but this vault has served this bucket before: mount offline with what it holds.
      if (!(err instanceof StorageError) || !err.transient || !vaultKnows(vaultDir, served)) throw err;
      log.warn({ storage: where, err: err.detail }, 'storage unreachable: mounting offline from the vault; uploads start when it returns');
      storage.goOffline(err);
    }
    const servedBefore = Vault.peekInfo(vaultDir, 'storage');
    vault = await Vault.open({
      dir: vaultDir,
      storage,
      blockSize: config.vault.blockSize,
      fetchBlocks: config.vault.fetchBlocks,
      readAheadBlocks: config.vault.readAheadBlocks,
      sizeLimit: config.vault.sizeLimit,
      flushAfterCloseMs: config.vault.flushAfterCloseMs,
      flushMaxDelayMs: config.vault.flushMaxDelayMs,
      uploadConcurrency: config.vault.uploadConcurrency,
      conflictPolicy: config.vault.conflictPolicy,
      dirtyBudget: config.vault.dirtyBudget,
      readOnly: config.fs.readOnly,
      objectMeta: objectMetaFor,
      streamMeta: config.vault.streamUploads ? (attrs) => ({ meta: encodeMeta('file', attrs, false) }) : undefined,
      // The mirror's "no such object" answers (listings, the nonexistent-files cache) hold this long.
      absentTrustMs: config.fs.metadataTtlMs,
      log,
    });
    // Stored listings outlive a remount, but only for the storage (and point in time) they were taken from.
    if (servedBefore !== served) vault.listings.clear();
    vault.setInfo('storage', served);
    if (vault.orphans.length) log.warn({ count: vault.orphans.length, keys: vault.orphans.slice(0, 20).map((r) => r.key) }, 'orphan files found (changed, never uploaded): uploading them');
    const mirror = new S3Mirror({
      vault,
      log,
      owner: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 },
      // A point-in-time view never changes: what was listed or looked up once stays true.
      metadataTtlMs: asOf ? FOREVER : config.fs.metadataTtlMs,
      metadataCacheSize: config.fs.metadataCacheSize,
      listingTtlMs: asOf ? FOREVER : config.fs.listingTtlMs,
      listingAttributes: config.fs.listingAttributes,
      capacityBytes: config.fs.capacityBytes,
      readOnly: config.fs.readOnly,
      localPatterns: config.fs.localPatterns,
      syncMode: config.fs.sync,
      // The embedded server keeps keys as files with a suffix: a longer name would not fit its disk.
      nameMax: job.embedded ? EMBEDDED_NAME_MAX : undefined,
    });
    // The CBFS event layer: per-file serialization, concurrency limit and deadlines around the mirror's handlers.
    const events = new EventDispatcher(mirror, {
      maxConcurrentEvents: config.fs.maxConcurrentEvents,
      serializeAccess: config.fs.serializeAccess,
      timeoutMs: config.fs.eventTimeoutMs,
      onError: (op, path, err) => log.error({ op, path, err: (err as Error)?.stack ?? String(err) }, 'unexpected error in an event handler'),
      onTimeout: (op, path, ms) => log.error({ op, path, ms }, 'event deadline expired: the request failed with EIO'),
    });
    session = new FuseSession(events, {
      mountpoint,
      fsname: `s3vault:${config.s3.bucket}${config.s3.prefix ? `/${config.s3.prefix}` : ''}`,
      readOnly: config.fs.readOnly,
      allowOther: config.fs.allowOther,
      attrTimeout: config.fs.attrTimeoutSec,
      passthrough: config.fs.passthrough,
      pageCacheFill: config.fs.pageCacheFill,
      log,
    });
    // The Mount event: interrupted renames are finished and orphans queued before the first request.
    await mirror.mount();
    session.mount();
    let stopping: Promise<void> | undefined;
    let flushOnStop = true;
    let loopEnded = false;
    let giveUp: () => void = () => undefined;
    const gaveUp = new Promise<void>((resolve) => (giveUp = resolve));
    /**
     * Flush (FLUSH_IMMEDIATE) unless told not to, then unmount; the request loop then returns. A second signal
     * while the flush runs (an upload retrying against a storage that keeps failing) unmounts at once: what is
     * left stays in the vault's journal, as after a crash, and uploads at the next mount.
     */
    const stop = (why: string, signal = false): Promise<void> => {
      if (stopping && signal && flushOnStop) {
        log.warn({ why, pending: vault?.enumerateCachedFiles(ENUM_MODE.CHANGED).length }, 'second signal: unmounting without waiting for the uploads; changes left in the vault upload at the next mount');
        flushOnStop = false;
        forced = true;
        giveUp();
        return stopping;
      }
      if (!stopping) log.info({ why, flush: flushOnStop }, `stopping: ${flushOnStop ? 'flushing, then unmounting' : 'unmounting'}${signal && flushOnStop ? ' (signal again to unmount without waiting for the uploads)' : ''}`);
      // Unmounted from outside already: the flush after the loop is the one running.
      stopping ??= loopEnded ? Promise.resolve() : (flushOnStop ? Promise.race([mirror.unmount(), gaveUp]) : Promise.resolve()).catch(() => undefined).then(() => session!.unmount());
      return stopping;
    };
    const v = vault;
    control = startControlServer(
      registerMount(mountpoint, process.pid),
      new Maintenance(vault, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }),
      {
        unmount: async (flush, progress, lazy) => {
          const r = flush
            ? await v.flushAll((done, total, key) => progress({ doneBytes: done, totalBytes: total, files: done, totalFiles: total, current: key }))
            : { uploaded: 0, left: v.enumerateCachedFiles(ENUM_MODE.CHANGED).length };
          // As umount(8): a busy mount stays, unless detaching it lazily was asked for (the process then serves the
          // files still open until they are closed). Before, it was detached lazily and the CLI waited silently
          // for the last of them.
          const before = flushOnStop;
          flushOnStop = flush; // set first: the loop may end (unmounted) before this turn does
          if (!lazy && !stopping && (await session!.tryUnmount()) === 'busy') {
            flushOnStop = before;
            return { ...r, busy: true };
          }
          void stop(flush ? 'unmount' : 'unmount --no-wait');
          return r;
        },
        refresh: (p) => mirror.refresh(p),
      },
      log,
    );
    const loop = session.run();
    // An error nothing caught: Node would exit by joining its thread pool, where the FUSE loop runs for the life of
    // the mount, and hang there with the mount. Log it, detach the mount and stop hard instead: what was
    // acknowledged is in the vault's journal (as after kill -9), and the next start uploads it.
    const mounted = mountpoint;
    const fatal = (err: unknown) => {
      log.error({ err }, 'internal error: s3vault stops now (changes stay in the vault; the next mount uploads them)');
      spawnSync('fusermount3', ['-uz', mounted], { stdio: 'ignore', timeout: 10_000 });
      process.kill(process.pid, 'SIGKILL');
    };
    process.on('uncaughtException', fatal);
    process.on('unhandledRejection', fatal);
    process.on('SIGINT', () => void stop('SIGINT', true));
    process.on('SIGTERM', () => void stop('SIGTERM', true));
    process.on('SIGHUP', () => void stop('SIGHUP', true));
    log.info({ mountpoint, storage: where, vault: vaultDir }, 'mounted');
    notify(true, `mounted ${where} at ${mountpoint}${server ? ` (embedded S3 server at ${server.endpoint})` : ''}`, EXIT.OK);
    await loop;
    loopEnded = true;
    await stopping;
    // Unmounted from outside (fusermount3 -u): flush what is pending before closing the vault (a signal meanwhile
    // gives up waiting, as above).
    if (flushOnStop) await Promise.race([mirror.unmount(), gaveUp]);
    log.info({ mountpoint }, 'unmounted');
    return EXIT.OK;
  } catch (err) {
    const { message, exit } = explain(err, where);
    log.debug({ err }, 'mount failed');
    if (job.notify) notify(false, message, exit);
    else process.stderr.write(`s3vault: error: ${message}\n`);
    return exit;
  } finally {
    // The CLI that asked for this unmount (or anything else) gets its answer first.
    await control?.answered(5000);
    control?.close();
    session?.close();
    // Told not to wait for the uploads (a second signal): those under way are abandoned, as by a crash.
    await vault?.close({}, { abandonUploads: forced }).catch((err) => log.error({ err: (err as Error).message }, 'closing the vault failed'));
    await (storage ?? s3)?.close();
    await server?.stop();
    if (mountpoint) unregisterMount(mountpoint, process.pid);
  }
}
