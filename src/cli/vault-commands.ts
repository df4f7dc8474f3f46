/** `s3vault fsck` and `s3vault vault compact`: maintenance of a vault no mount is using. */
import path from 'node:path';
import type { Command } from 'commander';
import { CACHE_CHECK } from '../cache/constants.js';
import { EXIT } from './exit-codes.js';
import { printable } from './printable.js';

const MiB = 1024 * 1024;

export function addVaultCommands(program: Command, setResult: (p: Promise<number>) => void): void {
  program
    .command('fsck')
    .description('check a vault (SQLite integrity, every block against its checksum) and repair it: damaged clean blocks are dropped and refetched later; damaged changed blocks are reported')
    .requiredOption('--vault <dir>', 'the vault directory (not in use by a mount)')
    .option('--recreate', 'if the vault database is beyond repair, move its data files aside and start an empty vault')
    .action((flags: { vault: string; recreate?: boolean }) => {
      setResult(
        (async () => {
          const { checkAndRepair } = await import('../cache/check.js');
          const dir = path.resolve(flags.vault);
          const r = await checkAndRepair(dir, flags.recreate ? CACHE_CHECK.RECREATE_VAULT : CACHE_CHECK.NO_RECREATE);
          if (r.recreated) {
            process.stdout.write(`s3vault: vault ${dir} was beyond repair (${r.recreated.reason}); its data files were saved in ${r.recreated.salvageDir} and an empty vault was created\n`);
            return EXIT.OK;
          }
          process.stdout.write(`s3vault: checked ${r.blocksChecked} blocks in ${dir}\n`);
          for (const d of r.droppedClean) process.stdout.write(`  repaired: ${printable(d.key)} block at ${d.offset} was damaged; dropped, it will be read again from storage\n`);
          for (const d of r.damagedDirty) process.stdout.write(`  DAMAGED: ${printable(d.key)} block at ${d.offset} holds changes not yet uploaded and no longer matches its checksum\n`);
          if (r.strayDataFiles) process.stdout.write(`  removed ${r.strayDataFiles} data files that no record owned\n`);
          if (!r.droppedClean.length && !r.damagedDirty.length) process.stdout.write('  no damage found\n');
          return r.damagedDirty.length ? EXIT.VAULT : EXIT.OK;
        })(),
      );
    });

  program
    .command('vault')
    .description('vault maintenance')
    .command('compact')
    .description('reclaim space in a vault (not in use by a mount): VACUUM, and punch out bytes no block holds')
    .requiredOption('--vault <dir>', 'the vault directory')
    .action((flags: { vault: string }) => {
      setResult(
        (async () => {
          const { compactVault } = await import('../cache/check.js');
          const r = compactVault(path.resolve(flags.vault));
          process.stdout.write(`s3vault: data files use ${(r.bytesAfter / MiB).toFixed(1)} MiB (were ${(r.bytesBefore / MiB).toFixed(1)} MiB)\n`);
          return EXIT.OK;
        })(),
      );
    });
}
