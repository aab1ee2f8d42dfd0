/**
 * Windows policy states that decide whether the engine may run and be reached, read from the registry: code
 * integrity (memory integrity / HVCI, the vulnerable-driver blocklist, Smart App Control), the firewall rule for
 * reflected traffic (Install-Retroflect -AllowFirewall), and the enterprise private network ranges AppContainer apps
 * obey (Group Policy "Private network ranges for apps").
 */
import { existsSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { readRegistryValue } from '../platform/windows/registry.ts';
import { pass, skipped, warning, type Check } from './check.ts';
import type { DoctorContext } from './context.ts';
import { readPeFacts } from './pe-file.ts';

const HVCI_KEY = 'SYSTEM\\CurrentControlSet\\Control\\DeviceGuard\\Scenarios\\HypervisorEnforcedCodeIntegrity';
const CI_CONFIG_KEY = 'SYSTEM\\CurrentControlSet\\Control\\CI\\Config';
const CI_POLICY_KEY = 'SYSTEM\\CurrentControlSet\\Control\\CI\\Policy';
const FIREWALL_KEY = 'SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy';
const FIREWALL_POLICY_KEY = 'SOFTWARE\\Policies\\Microsoft\\WindowsFirewall';
const NETWORK_ISOLATION_KEY = 'SOFTWARE\\Policies\\Microsoft\\Windows\\NetworkIsolation';
/** The rule Install-Retroflect -AllowFirewall creates (powershell/Retroflect/Private/Installation.ps1). */
export const FIREWALL_RULE_NAME = 'Retroflect-Reflected-In';
const SAC_STATES: Record<number, string> = { 0: 'off', 1: 'on', 2: 'evaluation' };

function dword(key: string, name: string): number | null {
  const v = readRegistryValue(key, name);
  return typeof v === 'number' ? v : null;
}

function signed(path: string | null): boolean | null {
  if (!path || !existsSync(path)) return null;
  try {
    return readPeFacts(path).signed;
  } catch {
    return null;
  }
}

export function codeIntegrityCheck(ourDriver: string | null): Check {
  const name = 'windows.code-integrity';
  const hvci = dword(HVCI_KEY, 'Enabled');
  const blocklist = dword(CI_CONFIG_KEY, 'VulnerableDriverBlocklistEnable');
  const sac = dword(CI_POLICY_KEY, 'VerifiedAndReputablePolicyState');
  const exeSigned = signed(process.execPath);
  const evidence = { hvci, vulnerableDriverBlocklist: blocklist,
    smartAppControl: sac === null ? null : (SAC_STATES[sac] ?? sac), executable: process.execPath,
    executableSigned: exeSigned, driverSigned: signed(ourDriver) };
  if (sac === 1 && exeSigned === false) {
    return warning(name,
      `Smart App Control is on and ${process.execPath} carries no signature: Windows may refuse to start it.`,
      'Sign retroflect.exe with your organisation\'s code-signing certificate (signtool sign), or run it on hosts ' +
        'where Smart App Control is off; it cannot be excluded per program.', evidence);
  }
  const notes: string[] = [];
  if (hvci === 1) notes.push('memory integrity (HVCI) is on: only drivers compatible with it load — if opening ' +
    'WinDivert fails with 577 or 1275, this is why');
  if (blocklist !== 0) notes.push(`the vulnerable-driver blocklist is ` +
    `${blocklist === 1 ? 'on' : 'on by default (Windows 11 22H2 and later)'}: a driver on it fails with 1275`);
  if (sac === 2) notes.push('Smart App Control is evaluating: it may turn on and then block unsigned programs');
  return pass(name,
    notes.length ? `Nothing here blocks the engine now; ${notes.join('; ')}.` : 'Memory integrity, the ' +
      'vulnerable-driver blocklist and Smart App Control are off.',
    evidence);
}

/** Is the firewall on for any profile? null when nothing says (Windows' default: on). */
function firewallOn(): { on: boolean; profiles: Record<string, number | null> } {
  const profiles: Record<string, number | null> = {};
  for (const [profile, policy] of [['DomainProfile', 'DomainProfile'], ['StandardProfile', 'PrivateProfile'],
    ['PublicProfile', 'PublicProfile']]) {
    const byPolicy = dword(`${FIREWALL_POLICY_KEY}\\${policy}`, 'EnableFirewall');
    profiles[policy] = byPolicy ?? dword(`${FIREWALL_KEY}\\${profile}`, 'EnableFirewall');
  }
  return { on: Object.values(profiles).some((v) => v !== 0), profiles };
}

/** Fields of a firewall rule as the registry stores it: "v2.30|Action=Allow|Dir=In|RA4=192.0.2.1|...". */
export function parseFirewallRule(text: string): Map<string, string[]> {
  const fields = new Map<string, string[]>();
  for (const part of text.split('|').slice(1)) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const k = part.slice(0, eq);
    fields.set(k, [...(fields.get(k) ?? []), part.slice(eq + 1)]);
  }
  return fields;
}

export function firewallCheck(ctx: DoctorContext): Check {
  const name = 'windows.firewall';
  const addresses = ctx.config.reflectAddresses;
  if (!addresses.length) return skipped(name, 'No reflect address is configured.');
  const fw = firewallOn();
  const ruleText = readRegistryValue(`${FIREWALL_KEY}\\FirewallRules`,
    FIREWALL_RULE_NAME) ?? readRegistryValue(`${FIREWALL_POLICY_KEY}\\FirewallRules`, FIREWALL_RULE_NAME);
  const evidence: Record<string, unknown> = { profiles: fw.profiles,
    rule: typeof ruleText === 'string' ? ruleText : null };
  if (!fw.on) return pass(name,
    'Windows Defender Firewall is off for every profile, so no rule is needed for reflected connections.', evidence);
  const byHand = `New-NetFirewallRule -Name ${FIREWALL_RULE_NAME} -DisplayName 'Retroflect: reflected connections' ` +
    `-Direction Inbound -Action Allow -RemoteAddress ${addresses.join(',')}`;
  const fix = `Install-Retroflect -AllowFirewall (it creates or updates the rule), or: ${byHand}`;
  if (typeof ruleText !== 'string') {
    return warning(name,
      `The firewall is on and the rule ${FIREWALL_RULE_NAME} is missing: reflected connections arrive as inbound ` +
        `from the reflect address, so a local server without its own allow rule does not see them.`,
      fix, evidence);
  }
  const f = parseFirewallRule(ruleText);
  const remote = [...(f.get('RA4') ?? []), ...(f.get('RA6') ?? [])].map((a) => a.toLowerCase());
  const missing = addresses.filter((a) => !remote.includes(a.toLowerCase()));
  const enabled = (f.get('Active') ?? ['TRUE'])[0].toUpperCase() === 'TRUE';
  const allows = (f.get('Action') ?? [''])[0] === 'Allow' && (f.get('Dir') ?? [''])[0] === 'In';
  Object.assign(evidence, { remoteAddresses: remote, missing, enabled, allows });
  if (!enabled || !allows) return warning(name,
    `The rule ${FIREWALL_RULE_NAME} exists but is ${!enabled ? 'disabled' : 'not an inbound allow rule'}.`,
    `Enable-NetFirewallRule -Name ${FIREWALL_RULE_NAME}, or run ${fix}`, evidence);
  if (missing.length) return warning(name, `The rule ${FIREWALL_RULE_NAME} does not allow ${missing.join(', ')}.`,
    `Set-NetFirewallRule -Name ${FIREWALL_RULE_NAME} -RemoteAddress ${addresses.join(',')}, or run ` +
      `Install-Retroflect -AllowFirewall again.`,
    evidence);
  return pass(name, `The rule ${FIREWALL_RULE_NAME} allows reflected connections from ${addresses.join(', ')}.`,
    evidence);
}

export function privateRangesCheck(ctx: DoctorContext): Check {
  const name = 'windows.private-ranges';
  const raw = readRegistryValue(NETWORK_ISOLATION_KEY, 'DomainSubnets');
  const ranges = typeof raw === 'string' ? raw.split(/[,;]/).map((s) => s.trim()).filter(Boolean) : [];
  const evidence: Record<string, unknown> = { domainSubnets: ranges };
  if (!ranges.length) return pass(name,
    'No enterprise private network ranges are set by policy, so AppContainer apps with internetClient reach the ' +
      'reflect addresses.',
    evidence);
  const inside: { address: string; range: string }[] = [];
  for (const a of ctx.config.reflectAddresses) {
    for (const r of ranges) {
      try {
        const [net, len] = ipaddr.parseCIDR(r);
        const addr = ipaddr.parse(a);
        if (addr.kind() === net.kind() && addr.match(net, len)) inside.push({ address: a, range: r });
      } catch {
        // a malformed entry is Windows' problem to report; it covers nothing here
      }
    }
  }
  evidence.inside = inside;
  if (inside.length) {
    return warning(name,
      `${inside.map((i) => `${i.address} is inside the enterprise private range ${i.range}`).join('; ')} ` +
        '(Group Policy "Private network ranges for apps"): AppContainer apps without the ' +
        'privateNetworkClientServer capability cannot reach it.',
      'Pick a reflect address outside those ranges (retroflect address test <address>), or remove the range from the ' +
        'policy.', evidence);
  }
  return pass(name, `No reflect address is inside the enterprise private ranges ${ranges.join(', ')}.`, evidence);
}
