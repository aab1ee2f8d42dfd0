/**
 * Checks that apply on every platform: privileges, each reflect address (the validation rules and its route), each
 * server port the config relies on (shielded or a port-map target: is a server bound, and to the wildcard), and the
 * running engine (state, version, counters).
 */
import { shieldKey } from '../config/intercept-config.ts';
import { portMapsOf } from '../config/port-maps.ts';
import { ErrorCode } from '../errors.ts';
import { checkReflectAddress, suggestReflectAddress } from '../platform/validate-address.ts';
import { lookupRoute } from '../platform/route-lookup.ts';
import { VERSION } from '../version.ts';
import { fail, pass, skipped, warning, type Check } from './check.ts';
import type { DoctorContext } from './context.ts';
import { isLoopback, isWildcard, type BoundSocket } from './listeners.ts';

const AS_ADMIN = (platform: NodeJS.Platform): string =>
  platform === 'win32' ? 'Run it from an elevated prompt (Run as Administrator), or as SYSTEM.' : 'Run it as root ' +
    '(sudo retroflect doctor).';

export function privilegesCheck(ctx: DoctorContext): Check {
  const who = ctx.platform === 'win32' ? 'an elevated Administrator' : 'root';
  if (ctx.admin) return pass('privileges', `This process runs as ${who}, as the engine must.`, { admin: true });
  return fail('privileges',
    `This process does not run as ${who}: the engine cannot open its packet backend, and some checks below are ` +
      `skipped.`,
    AS_ADMIN(ctx.platform), { admin: false });
}

export function configCheck(ctx: DoctorContext): Check {
  const s = ctx.configSource;
  if (s.kind === 'engine') return pass('config',
    'The running engine\'s addresses, shield ports and port maps are checked.', { source: 'engine' });
  if (s.kind === 'none') return fail('config', `The config file cannot be used: ${s.problem}`,
    'Fix the config file (retroflect run refuses it too), or give another with --config.', { source: 'none' });
  if (!ctx.config.reflectAddresses.length) {
    return warning('config',
      `No reflect address is configured (${s.existed ? s.path : `${s.path} does not exist`}): ` +
        'nothing would be reflected.',
      "Run 'retroflect run' once (it picks a usable address and saves it), or add one: retroflect address add " +
        "192.0.2.1.", { source: 'file',
        path: s.path, existed: s.existed });
  }
  return pass('config', `The config file ${s.path} is checked (no engine runs).`, { source: 'file', path: s.path });
}

/** One check per reflect address: every validation rule, and the route it leaves by. */
export async function addressChecks(ctx: DoctorContext): Promise<Check[]> {
  const out: Check[] = [];
  for (const address of ctx.config.reflectAddresses) {
    const name = `address.${address}`;
    const r = await checkReflectAddress(address);
    const evidence: Record<string, unknown> = { address, route: r.route,
      rules: r.refusals.map((e) => e.details?.rule ?? e.code) };
    if (r.refusals.length) {
      const family = address.includes(':') ? 6 : 4;
      const suggestion = await suggestReflectAddress(family, undefined, [address]);
      const first = r.refusals[0];
      const instead = suggestion ? ` Or use ${suggestion.address} instead: retroflect address remove ${address}; ` +
        `retroflect address add ${suggestion.address}.` : '';
      out.push(fail(name, r.refusals.map((e) => e.message).join(' '), `${first.hint ?? ''}${instead}`.trim(),
        { ...evidence, suggestion: suggestion?.address ?? null }));
      continue;
    }
    const gateway = r.route?.gateway ? ` via ${r.route.gateway}` : '';
    const from = r.route?.source ? ` from ${r.route.source}` : '';
    const via = r.route?.device ? ` It leaves by ${r.route.device}${gateway}${from}.` : '';
    if (r.warnings.length) {
      out.push(warning(name, `${r.warnings.join(' ')}${via}`,
        'Prefer a documentation-range address (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) unless ' +
          'you mean to shadow that host.',
        evidence));
    } else {
      out.push(pass(name, `${address} passes every rule.${via}`, evidence));
    }
  }
  return out;
}

interface ServerPort {
  port: number;
  protocol: 'tcp' | 'udp';
  /** Why the config needs a server there. */
  roles: string[];
  mapped: boolean;
}

function serverPorts(ctx: DoctorContext): ServerPort[] {
  const byKey = new Map<string, ServerPort>();
  const add = (port: number, protocol: 'tcp' | 'udp', role: string, mapped: boolean): void => {
    const key = `${port}/${protocol}`;
    const p = byKey.get(key) ?? { port, protocol, roles: [], mapped: false };
    p.roles.push(role);
    p.mapped ||= mapped;
    byKey.set(key, p);
  };
  for (const s of ctx.config.shieldPorts) add(s.port, s.protocol, `shielded (${shieldKey(s)})`, false);
  for (const m of portMapsOf(ctx.config)) add(m.target, m.protocol,
    `target of the port map ${m.address}:${m.port}/${m.protocol}`, true);
  return [...byKey.values()];
}

/**
 * Where reflected packets arrive: addressed to the source address this host uses toward each reflect address (the
 * reflected packet's destination is the original packet's source).
 */
async function reflectedDestinations(ctx: DoctorContext): Promise<Set<string>> {
  const out = new Set<string>();
  for (const a of ctx.config.reflectAddresses) {
    const route = await lookupRoute(a).catch(() => null);
    if (route?.source) out.add(route.source);
  }
  return out;
}

/** One check per server port: a server bound there, to the wildcard address (or to where reflected packets arrive). */
export async function portChecks(ctx: DoctorContext, sockets: BoundSocket[] | null): Promise<Check[]> {
  const ports = serverPorts(ctx);
  if (!ports.length) return [];
  if (!sockets) return ports.map((p) => skipped(`port.${p.port}/${p.protocol}`,
    'This platform\'s socket table is not read by this version.', { port: p.port, protocol: p.protocol }));
  const destinations = await reflectedDestinations(ctx);
  const out: Check[] = [];
  for (const p of ports) {
    const name = `port.${p.port}/${p.protocol}`;
    const bound = sockets.filter((s) => s.protocol === p.protocol && s.port === p.port).map((s) => s.address);
    const unique = [...new Set(bound)];
    const evidence = { port: p.port, protocol: p.protocol, roles: p.roles, boundTo: unique,
      reflectedArriveAt: [...destinations] };
    const what = p.roles.join('; ');
    const bindFix = `Bind the server to the wildcard address (0.0.0.0 or ::, e.g. --host 0.0.0.0 or ` +
      `listen(${p.port}) without an address), then restart it.`;
    if (!unique.length) {
      const detail = `No server ${p.protocol === 'tcp' ? 'listens' : 'is bound'} on ${p.port}/${p.protocol} (${what}).`;
      if (p.mapped) out.push(fail(name, `${detail} Clients of the mapped port get nothing.`,
        `Start the server on port ${p.port}, or change the port map to the port it uses (retroflect address add ` +
          `<address> --map <port>=<target>).`,
        evidence));
      else out.push(warning(name, `${detail} Nothing is there to reach or to shield.`,
        `Start the server on port ${p.port}, or stop shielding it: retroflect shield remove ${p.port}/${p.protocol}.`,
        evidence));
      continue;
    }
    if (unique.some(isWildcard)) {
      out.push(pass(name,
        `A server is bound to ${unique.join(', ')} on ${p.port}/${p.protocol} (${what}); reflected traffic reaches it.`,
        evidence));
      continue;
    }
    const reachable = unique.filter((a) => destinations.has(a));
    if (reachable.length) {
      out.push(warning(name,
        `The server on ${p.port}/${p.protocol} is bound to ${unique.join(', ')} only; reflected traffic reaches it ` +
          `while ${reachable.join(', ')} stays the address this host sends from.`,
        bindFix, evidence));
    } else if (unique.every(isLoopback)) {
      out.push(fail(name,
        `The server on ${p.port}/${p.protocol} is bound to ${unique.join(', ')} only: reflected packets arrive ` +
          `addressed to this host's own address${destinations.size ? ` (${[...destinations].join(', ')})` : ''}, ` +
          'never to loopback, so it never sees them.',
        bindFix, evidence));
    } else {
      out.push(fail(name,
        `The server on ${p.port}/${p.protocol} is bound to ${unique.join(', ')} only; reflected packets arrive ` +
          `addressed to ${destinations.size ? [...destinations].join(', ') : 'the address this host sends from'}.`,
        bindFix, evidence));
    }
  }
  return out;
}

/** Counters above these say something is wrong (a healthy engine has none, or almost none). */
export const SEND_ERROR_RATIO_MAX = 0.001;
export const SEND_ERRORS_TOLERATED = 10;

/** The running engine: up, same version, counters within bounds. Last, because it reads stats. */
export async function engineCheck(ctx: DoctorContext): Promise<Check> {
  const start = ctx.platform === 'win32' ? "Start it: 'retroflect run' in an elevated prompt, Start-Retroflect, or " +
    "Install-Retroflect to run it at boot." : "Start it: 'sudo retroflect run', Start-Retroflect, or " +
      "Install-Retroflect (a systemd unit).";
  if (!ctx.engine) {
    const problem = ctx.engineProblem;
    if (problem && problem.code !== ErrorCode.ENGINE_NOT_RUNNING) {
      return fail('engine', `The engine could not be asked: ${problem.message}`, problem.hint ?? start, { running: null,
        code: problem.code });
    }
    return warning('engine',
      `No engine answers${problem?.details?.pipe ? ` on ${String(problem.details.pipe)}` : ''}: nothing is reflected ` +
        'now. The checks above say whether one would work.',
      start, { running: false });
  }
  const e = ctx.engine;
  const evidence: Record<string, unknown> = { running: true, state: e.state, pid: e.pid, version: e.version,
    backend: e.backend, uptimeSeconds: e.uptimeSeconds, hostRepairs: e.hostRepairs };
  if (e.state !== 'running') return fail('engine', `The engine answers but is ${e.state}.`,
    "Stop it ('retroflect stop') and start it again; its log says why.", evidence);
  const stats = await ctx.stats();
  const problems: string[] = [];
  if (stats) {
    evidence.errors = stats.errors;
    evidence.reflectedPackets = stats.reflected.packets;
    const tolerated = Math.max(SEND_ERRORS_TOLERATED, stats.reflected.packets * SEND_ERROR_RATIO_MAX);
    if (stats.errors.send > tolerated) problems.push(`${stats.errors.send} re-injections failed (more than ` +
      `${Math.floor(tolerated)} of ${stats.reflected.packets} reflected)`);
    if (stats.errors.receive > 0) problems.push(`${stats.errors.receive} receive errors`);
  }
  if (e.hostRepairs.count > 0) problems.push(`it had to put back its host state ${e.hostRepairs.count} time(s), last ` +
    `at ${e.hostRepairs.last?.at}: ${e.hostRepairs.last?.what}`);
  if (e.version !== VERSION) problems.push(`it is version ${e.version}, this command ${VERSION}`);
  if (problems.length) {
    return warning('engine', `The engine (pid ${e.pid}) runs, but ${problems.join('; ')}.`,
      'Find what removes the engine\'s routes or firewall rules (a VPN client, firewalld reload, nft flush ruleset) ' +
        'and exclude the engine\'s; for send errors see docs/windows.md (Send failures); after an upgrade restart ' +
          'the engine.', evidence);
  }
  return pass('engine',
    `The engine (pid ${e.pid}, ${e.backend}) runs, version ${e.version}; its counters are within bounds.`, evidence);
}
