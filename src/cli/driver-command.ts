/**
 * `retroflect driver release [--json]` (Windows): what Uninstall-Retroflect and upgrades run before they remove
 * WinDivert's files. It removes the `WinDivert` driver service entry only when no program holds a WinDivert handle
 * (asked through the REFLECT layer) and the entry is ours or stale; otherwise it leaves it and says why. Leaving it
 * is a success (exit 0): another tool's driver must keep working.
 */
import type { Command } from 'commander';
import { printJson, printSuccess, reportError } from './output.ts';

interface DriverCliOptions {
  json?: boolean;
  windivertDir?: string;
}

export function registerDriverCommand(program: Command): void {
  const driver = program.command('driver').description('The WinDivert driver service (Windows).');
  driver
    .command('release')
    .description('Remove the WinDivert driver service entry if no program uses WinDivert and the entry is ours (for ' +
      'uninstall and upgrade).')
    .option('--windivert-dir <dir>', 'folder of our WinDivert.dll and WinDivert64.sys (default: beside the executable)')
    .option('--json', 'print the outcome as JSON')
    .action(async (opts: DriverCliOptions) => {
      try {
        let result: { outcome: string; detail: string; holders?: unknown[] };
        if (process.platform !== 'win32') {
          result = { outcome: 'absent', detail: 'Only Windows has a WinDivert driver service.', holders: [] };
        } else {
          const { releaseDriverService } = await import('../doctor/windivert-driver.ts');
          const r = await releaseDriverService({ windivertDir: opts.windivertDir });
          result = { outcome: r.outcome, detail: r.detail, holders: r.holders };
        }
        if (opts.json) printJson(result);
        else if (result.outcome === 'removed') printSuccess(result.detail);
        else process.stdout.write(`${result.detail}\n`);
      } catch (err) {
        process.exitCode = reportError(err, opts.json === true);
      }
    });
}
