/**
 * Desired state from the command line: `address set` and `shield set` make the engine's list (running and in the
 * config file) exactly the one given, policy entries aside, through the protocol's `address.set` / `shield.set`.
 * Idempotent; `--what-if` shows the additions and removals without making them. An empty list needs `--none`, so a
 * script whose list variable is unexpectedly empty does not wipe the configuration.
 */
import type { Command } from 'commander';
import chalk from 'chalk';
import { shieldKey, type ShieldPort } from '../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { callAndPrint, mapsByAddress, withCommon, type CommonOptions } from './client-call.ts';
import { printSuccess, printWarning, reportError } from './output.ts';

interface SetOptions extends CommonOptions {
  whatIf?: boolean;
  none?: boolean;
}

/** "198.51.100.7,80=8080,443=8443/tcp" → {address, portMaps} (maps separated by commas after the address). */
function wantedAddress(arg: string): string | { address: string; portMaps: string[] } {
  const [address, ...maps] = arg.split(',').map((x) => x.trim());
  return maps.length ? { address: address ?? '', portMaps: maps.filter(Boolean) } : (address ?? '');
}

/** Refuse an empty list unless --none says that is meant (the exit code of a usage error). */
function checkList(items: string[], opts: SetOptions, what: string): boolean {
  if (items.length > 0 && opts.none) {
    process.exitCode = reportError(new RetroflectError(ErrorCode.USAGE, `--none means no ${what}; give either --none or a list.`), opts.json === true);
    return false;
  }
  if (items.length === 0 && !opts.none) {
    process.exitCode = reportError(
      new RetroflectError(ErrorCode.USAGE, `No ${what} given.`, { hint: `To remove every ${what.replace(/s$/, '')} that policy does not set, say --none.` }),
      opts.json === true,
    );
    return false;
  }
  return true;
}

function line(label: string, text: string, whatIf: boolean, success = true): void {
  if (whatIf) process.stdout.write(`${chalk.cyan('What if:')} ${label} ${text}\n`);
  else if (success) printSuccess(`${label} ${text}.`);
}

export function registerSetCommands(address: Command, shield: Command): void {
  withCommon(
    address
      .command('set')
      .description('Make the reflect addresses exactly these (running and saved), policy entries aside: ADDRESS[,PORT=TARGET[/tcp|/udp]...]')
      .argument('[address...]'),
  )
    .option('--what-if', 'show what would be added and removed, change nothing')
    .option('--none', 'no reflect addresses (besides those policy sets)')
    .action((addrs: string[], opts: SetOptions) => {
      if (!checkList(addrs, opts, 'reflect addresses')) return;
      return callAndPrint(opts, 'address.set', { addresses: addrs.map(wantedAddress), ...(opts.whatIf ? { whatIf: true } : {}) }, (r) => {
        for (const w of r.warnings) printWarning(w.message);
        if (r.added.length) line('Added', r.added.join(', '), r.whatIf);
        if (r.removed.length) line('Removed', r.removed.join(', '), r.whatIf);
        if (r.portMapsAdded.length) line('Mapped', mapsByAddress(r.portMapsAdded), r.whatIf);
        if (r.portMapsRemoved.length) line('Unmapped', mapsByAddress(r.portMapsRemoved), r.whatIf);
        if (r.policy.length) process.stdout.write(`${chalk.dim('Set by policy (left as it is):')} ${r.policy.join(', ')}\n`);
        if (!r.added.length && !r.removed.length && !r.portMapsAdded.length && !r.portMapsRemoved.length) {
          process.stdout.write(`${chalk.dim('Nothing to change:')} the reflect addresses are as given.\n`);
        }
      });
    });

  withCommon(
    shield
      .command('set')
      .description('Make the shield ports exactly these (running and saved), policy entries aside: 8080, 8080/tcp, 53/udp')
      .argument('[port...]'),
  )
    .option('--what-if', 'show what would be added and removed, change nothing')
    .option('--none', 'no shield ports (besides those policy sets)')
    .action((ports: string[], opts: SetOptions) => {
      if (!checkList(ports, opts, 'shield ports')) return;
      const text = (list: ShieldPort[]) => list.map(shieldKey).join(', ');
      return callAndPrint(opts, 'shield.set', { ports, ...(opts.whatIf ? { whatIf: true } : {}) }, (r) => {
        if (r.added.length) line('Shielded', text(r.added), r.whatIf);
        if (r.removed.length) line('Unshielded', text(r.removed), r.whatIf);
        if (r.policy.length) process.stdout.write(`${chalk.dim('Set by policy (left as it is):')} ${text(r.policy)}\n`);
        if (!r.added.length && !r.removed.length) process.stdout.write(`${chalk.dim('Nothing to change:')} the shield ports are as given.\n`);
      });
    });
}
