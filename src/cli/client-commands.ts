/**
 * The CLI's client commands: each connects to the running engine's pipe, calls one method and prints the result
 * (a table for people, the protocol result as is with --json for scripts). Exit codes come from `ExitCode`.
 */
import { Command } from 'commander';
import { shieldKey, type ShieldPort } from '../config/intercept-config.ts';
import type { EngineStats, FlowRecord } from '../engine/types.ts';
import { ExitCode } from '../errors.ts';
import type { AddressTestResult, StatusResult } from '../control/protocol.ts';
import chalk from 'chalk';
import { callAndPrint, mapsByAddress, mapsText, withClient, withCommon, type CommonOptions } from './client-call.ts';
import { registerSetCommands } from './set-commands.ts';
import { formatPortMap, type PortMap, type PortMapSpec } from '../config/port-maps.ts';
import { ALLOW_ALL, ALLOW_KINDS, ALLOW_WHO_KINDS, formatAllowedPorts, type AllowLists } from '../config/allow-lists.ts';
import { testAddressesOffline } from './offline-address-test.ts';
import {
  formatBytes,
  formatCount,
  formatDuration,
  printJson,
  printSuccess,
  printWarning,
  renderKeyValues,
  renderTable,
  reportError,
  whenOutputFails,
} from './output.ts';

interface ChangeOptions extends CommonOptions {
  temporary?: boolean;
}

/** address remove / shield remove: `--skip-missing` removes what is there and lists what is not. */
interface RemoveOptions extends ChangeOptions {
  skipMissing?: boolean;
}

interface AddressChangeOptions extends RemoveOptions {
  map?: string[];
  ports?: string;
  users?: string;
  groups?: string;
  cgroups?: string;
  apps?: string;
}

/** The allow-list params of `address add`: each option's comma list, or "all". */
function allowParams(opts: AddressChangeOptions): Record<string, string[] | 'all'> {
  const out: Record<string, string[] | 'all'> = {};
  for (const kind of ALLOW_KINDS) {
    const v = opts[kind];
    if (v === undefined) continue;
    out[kind] = v.trim().toLowerCase() === ALLOW_ALL ? ALLOW_ALL : v.split(',').map((x) => x.trim()).filter((x) => x !== '');
  }
  return out;
}

/** One address's allow lists in a line: "ports 8080,3128/tcp; users 1000". '' when it has none. */
export function allowText(l: AllowLists): string {
  const parts: string[] = [];
  if (l.ports) parts.push(`ports ${formatAllowedPorts(l.ports)}`);
  for (const kind of ALLOW_WHO_KINDS) if (l[kind]) parts.push(`${kind} ${l[kind]!.join(',')}`);
  return parts.join('; ');
}

const SKIP_MISSING_HELP = 'remove what is there and list what is not, instead of refusing the whole request';

/** The params every remove request shares. */
function removeParams(opts: RemoveOptions): Record<string, boolean> {
  return { ...(opts.temporary ? { temporary: true } : {}), ...(opts.skipMissing ? { skipMissing: true } : {}) };
}

/** Entries a --skip-missing remove did not find, one dim line (nothing when none). */
function printNotPresent(what: string[]): void {
  if (what.length) process.stdout.write(`${chalk.dim('Not present:')} ${what.join(', ')}\n`);
}

/** commander collector for a repeatable option. */
function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function portText(p: ShieldPort): string {
  return shieldKey(p);
}

/** An entry with its source, the source shown only when it is not the config file (the usual case). */
function withSource(text: string, source: string): string {
  return source === 'Config' ? text : `${text} ${chalk.dim(`(${source.toLowerCase()})`)}`;
}

function printStatus(s: StatusResult): void {
  const state = s.state === 'running' ? chalk.green(s.state) : chalk.yellow(s.state);
  process.stdout.write(
    renderKeyValues([
      ['state', state],
      ['version', s.version],
      ['backend', s.backend],
      ['pid', s.pid],
      ['uptime', formatDuration(s.uptimeSeconds)],
      ['reflect', s.addressSources.length ? s.addressSources.map((a) => withSource(a.address, a.source)).join(', ') : chalk.dim('(none)')],
      ['shield', s.shieldSources.length ? s.shieldSources.map((p) => withSource(portText(p), p.source)).join(', ') : chalk.dim('(none)')],
      ['port maps', s.portMaps?.length ? mapsByAddress(s.portMaps) : chalk.dim('(none)')],
      ['allowed', s.allow?.length ? s.allow.map((a) => `${a.address} ${allowText(a)}`).join(' | ') : chalk.dim('(no lists: every port, every program)')],
      ['config', s.configPath ?? chalk.dim('(none: changes are not persisted)')],
      ['pipe', s.pipeName ?? chalk.dim('(none)')],
      ['policy', `${s.policy.origin}: ${s.policy.state === 'invalid' ? chalk.red('invalid') : s.policy.state}`],
      ...s.policy.problems.map((p): [string, string] => ['policy problem', chalk.red(`${p.message} [${p.code}]`)]),
      ...Object.entries(s.backendInfo).map(([k, v]): [string, string | number] => [k, v]),
      ...(s.hostRepairs?.count
        ? [['host repairs', chalk.yellow(`${s.hostRepairs.count}, last ${s.hostRepairs.last?.at}: ${s.hostRepairs.last?.what}`)] as [string, string]]
        : []),
    ]),
  );
}

/** "12 packets, 1.2 KiB". */
function countText(c: { packets: number; bytes: number }): string {
  return `${formatCount(c.packets)} packets, ${formatBytes(c.bytes)}`;
}

function printStats(s: EngineStats): void {
  process.stdout.write(
    renderKeyValues([
      ['sampled', s.sampledAt],
      ['reflected', `${formatCount(s.reflected.packets)} packets, ${formatBytes(s.reflected.bytes)}`],
      ['shield dropped', `${formatCount(s.shieldDropped.packets)} packets, ${formatBytes(s.shieldDropped.bytes)}`],
      ['forged source dropped', `${formatCount(s.forgedSourceDropped.packets)} packets, ${formatBytes(s.forgedSourceDropped.bytes)}`],
      ['forwarded dropped', countText(s.forwardedDropped)],
      ['not allowed (refused)', `${formatCount(s.notAllowed.packets)} packets, ${formatBytes(s.notAllowed.bytes)}`],
      ['passed', `${formatCount(s.passed.packets)} packets, ${formatBytes(s.passed.bytes)}`],
      ['malformed', formatCount(s.malformed.total)],
      ['errors', `receive ${s.errors.receive}, send ${s.errors.send}`],
      ['not re-injected (expected)', `host unreachable ${s.errors.sendExpected.hostUnreachable}, ICMP refused by Windows ${s.errors.sendExpected.icmpRefused}`],
      ['rate', `${formatCount(Math.round(s.rates.reflectedPackets))} pkt/s, ${formatBytes(Math.round(s.rates.reflectedBytes))}/s reflected`],
    ]),
  );
  process.stdout.write(
    renderTable(
      ['address', 'packets', 'bytes', 'tcp', 'udp', 'icmp', 'not allowed'],
      s.byAddress.map((a) => [
        a.address,
        formatCount(a.packets),
        formatBytes(a.bytes),
        formatCount(a.byProtocol.tcp.packets),
        formatCount(a.byProtocol.udp.packets),
        formatCount(a.byProtocol.icmp.packets),
        formatCount(a.notAllowed.packets),
      ]),
      '(no reflect addresses)',
    ),
  );
  if (s.byShieldPort.length) {
    process.stdout.write(renderTable(['shield port', 'dropped packets', 'bytes'], s.byShieldPort.map((p) => [portText(p), formatCount(p.packets), formatBytes(p.bytes)])));
  }
}

/** address:port, with the IPv6 address in brackets (RFC 3986) so the port cannot be read as part of it. */
export function endpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function printFlows(flows: FlowRecord[]): void {
  process.stdout.write(
    renderTable(
      ['proto', 'client', 'server', 'state', 'process', 'user', 'packets', 'bytes', 'last seen'],
      flows.map((f) => [
        f.protocol,
        endpoint(f.localAddress, f.clientPort),
        f.mappedFromPort != null ? `${endpoint(f.reflectAddress, f.mappedFromPort)} → :${f.serverPort}` : endpoint(f.reflectAddress, f.serverPort),
        f.state,
        f.processName ? `${f.processName}${f.pid !== null ? ` (${f.pid})` : ''}` : chalk.dim('-'),
        f.user ?? (f.uid !== null ? String(f.uid) : chalk.dim('-')),
        formatCount(f.packets),
        formatBytes(f.bytes),
        f.lastSeen,
      ]),
      '(no flows)',
    ),
  );
}

function printAddressTest(r: AddressTestResult): void {
  const verdict = r.valid ? chalk.green('usable') : chalk.red('not usable');
  const rows: [string, string | number][] = [['address', `${r.address ?? r.input}: ${verdict}${r.configured ? ' (configured)' : ''}`]];
  for (const reason of r.reasons) rows.push(['why not', reason.message]);
  for (const w of r.warnings) rows.push(['warning', w]);
  if (r.suggestion) rows.push(['use instead', `${r.suggestion.address}: ${r.suggestion.message}`]);
  process.stdout.write(renderKeyValues(rows));
}

export function registerClientCommands(program: Command): void {
  withCommon(program.command('status').description('Show whether the engine runs, and its addresses and ports.')).action((opts: CommonOptions) =>
    callAndPrint(opts, 'status', {}, printStatus),
  );

  const address = program.command('address').description('Manage reflect addresses of the running engine.');
  withCommon(address.command('list').description('List reflect addresses.')).action((opts: CommonOptions) =>
    callAndPrint(opts, 'address.list', {}, (r) =>
      process.stdout.write(
        renderTable(
          ['address', 'source', 'persisted', 'port maps', 'allowed'],
          r.addresses.map((a) => [
            a.address,
            a.source,
            a.persisted ? 'yes' : chalk.yellow('no (temporary)'),
            a.portMaps?.length ? mapsText(a.portMaps) : chalk.dim('-'),
            allowText(a.allow ?? {}) || chalk.dim('all'),
          ]),
          '(no reflect addresses)',
        ),
      ),
    ),
  );
  withCommon(address.command('add').description('Add reflect address(es); already present ones are left as they are.').argument('<address...>'))
    .option('-m, --map <port=target[/tcp|/udp]>', 'port map: a client reaching ADDRESS:port gets the local server on target (repeatable; default TCP and UDP)', collect)
    .option('--ports <list>', 'allow only these ports of ADDRESS (8080,3128/tcp,53/udp), refusing the rest at once; "all" lifts the list')
    .option('--users <list>', 'Linux: allow only these users (names or uids); "all" lifts the list')
    .option('--groups <list>', 'Linux: allow only these groups (names or gids); "all" lifts the list')
    .option('--cgroups <list>', 'Linux: allow only these cgroups (system.slice/squid.service); "all" lifts the list')
    .option('--apps <list>', 'Windows: allow only these programs (full paths) and packages (family names); "all" lifts the list')
    .option('-t, --temporary', 'change only the running engine, not the config file')
    .action((addrs: string[], opts: AddressChangeOptions) =>
      callAndPrint(opts, 'address.add', { addresses: addrs, ...(opts.map?.length ? { maps: opts.map } : {}), ...allowParams(opts), ...(opts.temporary ? { temporary: true } : {}) }, (r) => {
        for (const w of r.warnings) printWarning(w.message);
        const temp = opts.temporary ? ' (temporary)' : '';
        if (r.added.length) printSuccess(`Added ${r.added.join(', ')}${temp}.`);
        if (r.existing.length) process.stdout.write(`${chalk.dim('Already present:')} ${r.existing.join(', ')}\n`);
        if (r.portMaps?.added.length) printSuccess(`Mapped ${mapsByAddress(r.portMaps.added)}${temp}.`);
        if (r.portMaps?.existing.length) process.stdout.write(`${chalk.dim('Already mapped:')} ${mapsByAddress(r.portMaps.existing)}\n`);
        if (Object.keys(allowParams(opts)).length) for (const a of r.allow ?? []) printSuccess(`${a.address} allows ${allowText(a) || 'every port and program'}${temp}.`);
      }),
    );
  const testText = 'Check address(es) as `address add` would, changing nothing (Test-ReflectAddress; without an engine, ' +
    'on this host); exit 4 if any is unusable.';
  withCommon(address.command('test').description(testText).argument('<address...>'))
    .action(async (addrs: string[], opts: CommonOptions) => {
      let allUsable = true;
      const print = (results: AddressTestResult[]): void => {
        allUsable = results.every((r) => r.valid);
        if (opts.json) printJson(results);
        else results.forEach(printAddressTest);
      };
      // No engine: the same checks on this host, against the config file's addresses (offline-address-test.ts).
      if (await testAddressesOffline(addrs, opts.pipe, print)) process.exitCode = ExitCode.OK;
      else {
        await withClient(opts, async (client) => {
          const results: AddressTestResult[] = [];
          for (const a of addrs) results.push(await client.call('address.test', { address: a }));
          print(results);
        });
      }
      // Scripts learn "unusable" from the exit code, as `address add` would refuse it, without parsing the output.
      if (process.exitCode === ExitCode.OK && !allUsable) process.exitCode = ExitCode.INVALID_ARGUMENT;
    });
  withCommon(address.command('remove').alias('rm').description('Remove reflect address(es), or with --map only those port maps.').argument('<address...>'))
    .option('-m, --map <port[/tcp|/udp]>', 'remove only the port map on this port (repeatable); the address stays', collect)
    .option('-t, --temporary', 'change only the running engine; it comes back at the next start')
    .option('--skip-missing', SKIP_MISSING_HELP)
    .action((addrs: string[], opts: AddressChangeOptions) =>
      callAndPrint(opts, 'address.remove', { addresses: addrs, ...(opts.map?.length ? { maps: opts.map } : {}), ...removeParams(opts) }, (r) => {
        const temp = opts.temporary ? ' (temporary)' : '';
        if (opts.map?.length) {
          if (r.portMapsRemoved.length) printSuccess(`Removed port maps ${mapsByAddress(r.portMapsRemoved)}${temp}.`);
          printNotPresent(r.portMapsMissing.map((m) => `${m.address} ${m.port}${m.protocol === 'both' ? '' : `/${m.protocol}`}`));
          return;
        }
        if (r.removed.length) printSuccess(`Removed ${r.removed.join(', ')}${temp}.`);
        // The maps of a removed address went with it: said, so nothing disappears silently.
        if (r.portMapsRemoved.length) printSuccess(`Removed port maps ${mapsByAddress(r.portMapsRemoved)}${temp}.`);
        printNotPresent(r.missing);
      }),
    );

  const shield = program.command('shield').description('Manage shield ports (drop inbound traffic from other hosts).');
  withCommon(shield.command('list').description('List shield ports.')).action((opts: CommonOptions) =>
    callAndPrint(opts, 'shield.list', {}, (r) =>
      process.stdout.write(renderTable(['port', 'protocol', 'source', 'persisted'], r.ports.map((p) => [p.port, p.protocol, p.source, p.persisted ? 'yes' : chalk.yellow('no')]), '(no shield ports)')),
    ),
  );
  withCommon(shield.command('add').description('Shield port(s): 8080 (TCP and UDP), 8080/tcp, 53/udp.').argument('<port...>'))
    .option('-t, --temporary', 'change only the running engine, not the config file')
    .action((ports: string[], opts: ChangeOptions) =>
      callAndPrint(opts, 'shield.add', { ports, ...(opts.temporary ? { temporary: true } : {}) }, (r) => {
        if (r.added.length) printSuccess(`Shielded ${r.added.map(portText).join(', ')}${opts.temporary ? ' (temporary)' : ''}.`);
        if (r.existing.length) process.stdout.write(`${chalk.dim('Already shielded:')} ${r.existing.map(portText).join(', ')}\n`);
      }),
    );
  withCommon(shield.command('remove').alias('rm').description('Stop shielding port(s).').argument('<port...>'))
    .option('-t, --temporary', 'change only the running engine; it comes back at the next start')
    .option('--skip-missing', SKIP_MISSING_HELP)
    .action((ports: string[], opts: RemoveOptions) =>
      callAndPrint(opts, 'shield.remove', { ports, ...removeParams(opts) }, (r) => {
        if (r.removed.length) printSuccess(`Unshielded ${r.removed.map(portText).join(', ')}${opts.temporary ? ' (temporary)' : ''}.`);
        printNotPresent(r.missing.map(portText));
      }),
    );

  registerSetCommands(address, shield);

  withCommon(program.command('stats').description('Show traffic counters.'))
    .option('-w, --watch [ms]', 'keep printing a new sample (every 1000 ms, or the given interval) until Ctrl+C')
    .action(async (opts: CommonOptions & { watch?: boolean | string }) => {
      if (opts.watch === undefined || opts.watch === false) return callAndPrint(opts, 'stats', {}, printStats);
      const intervalMs = opts.watch === true ? 1000 : Number(opts.watch);
      await withClient(opts, async (client) => {
        const stopped = client.closed();
        client.onNotification((n) => {
          if (n.method !== 'stats') return;
          if (opts.json) printJson(n.params, true); // one document per line
          else {
            if (process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
            printStats(n.params as EngineStats);
          }
        });
        await client.call('subscribe', { topic: 'stats', intervalMs });
        const interrupted = new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
        await Promise.race([stopped, interrupted, whenOutputFails()]);
      });
    });

  withCommon(program.command('flows').description('Show recent flows through reflect addresses.'))
    .option('-n, --limit <n>', 'show at most n flows (most recent first)')
    .action((opts: CommonOptions & { limit?: string }) =>
      callAndPrint(opts, 'flows', opts.limit === undefined ? {} : { limit: Number(opts.limit) }, (r) => printFlows(r.flows)),
    );

  withCommon(program.command('stop').description('Stop the engine (it undoes its host changes).')).action((opts: CommonOptions) =>
    callAndPrint(opts, 'stop', {}, () => printSuccess('The engine is stopping.')),
  );
}
