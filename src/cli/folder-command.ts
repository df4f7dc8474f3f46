/**
 * `s3vault mount-folder <dir> <mountpoint>`: mounts a local folder through the same CBFS event layer and FUSE
 * adapter as a bucket, with the folder backend (src/fs/folder) — the demonstration that a backend is only a
 * set of event handlers. Foreground; Ctrl-C (or `fusermount3 -u`) unmounts.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { EXIT } from './exit-codes.js';
import { checkMountpoint, MountpointError } from './mountpoint.js';

export function addFolderCommand(program: Command, setResult: (p: Promise<number>) => void): void {
  program
    .command('mount-folder')
    .description('mount a local folder through the CBFS event layer (a second backend, written as event handlers only); foreground, Ctrl-C unmounts')
    .argument('<dir>', 'the folder to show')
    .argument('<mountpoint>', 'an empty directory')
    .option('--verbose', 'debug logging')
    .action((dir: string, mountpoint: string, flags: { verbose?: boolean }) => {
      setResult(
        (async () => {
          // Loaded on use: the other commands need neither koffi, libfuse nor the logger.
          const { EventDispatcher } = await import('../fs/cbfs/dispatcher.js');
          const { FolderBackend } = await import('../fs/folder/folder.js');
          const { FuseSession } = await import('../fs/fuse/session.js');
          const { createLogger } = await import('../log.js');
          const log = createLogger({ verbose: flags.verbose });
          let mp: string;
          try {
            mp = checkMountpoint(path.resolve(mountpoint));
          } catch (err) {
            if (!(err instanceof MountpointError)) throw err;
            process.stderr.write(`s3vault: error: ${err.message}\n`);
            return EXIT.MOUNT;
          }
          const backend = new FolderBackend(path.resolve(dir));
          try {
            await backend.mount();
          } catch (err) {
            process.stderr.write(`s3vault: error: cannot use ${dir}: ${(err as Error).message}\n`);
            return EXIT.USAGE;
          }
          const events = new EventDispatcher(backend, { maxConcurrentEvents: 16, serializeAccess: false, timeoutMs: 0 });
          const session = new FuseSession(events, { mountpoint: mp, fsname: `s3vault-folder:${path.resolve(dir)}`, log });
          session.mount();
          const stop = () => void session.unmount();
          process.on('SIGINT', stop);
          process.on('SIGTERM', stop);
          process.stdout.write(`s3vault: mounted folder ${path.resolve(dir)} at ${mp}\n`);
          await session.run();
          session.close();
          await backend.unmount();
          return EXIT.OK;
        })(),
      );
    });
}
