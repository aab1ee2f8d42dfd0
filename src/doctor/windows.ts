/**
 * Windows checks: WinDivert's files (present, same version, signed), its driver service entry (with --repair for a
 * stale one), other WinDivert users (REFLECT layer) at our priority or with overlapping filters, the Base Filtering
 * Engine, code-integrity states, the firewall rule for reflected traffic, and the network-isolation private ranges.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type OpenWinDivertHandle, winDivertFilterOverlaps } from '../packet-sources/host-facts.ts';
import { WINDIVERT_PRIORITY } from '../packet-sources/registry.ts';
import { queryService } from '../platform/windows/services.ts';
import { windowsBoundSockets } from '../platform/windows/sockets.ts';
import { guarded, fail, pass, skipped, warning, type Check } from './check.ts';
import type { DoctorContext } from './context.ts';
import type { BoundSocket } from './listeners.ts';
import { readPeFacts, type PeFacts } from './pe-file.ts';
import { DRIVER_FILE, DRIVER_SERVICE, driverState, otherWinDivertHandles,
  releaseDriverService } from './windivert-driver.ts';
import { codeIntegrityCheck, firewallCheck, privateRangesCheck } from './windows-policy.ts';

function facts(path: string): (PeFacts & { sha256: string }) | null {
  try {
    return { ...readPeFacts(path), sha256: createHash('sha256').update(readFileSync(path)).digest('hex') };
  } catch {
    return null;
  }
}

function filesCheck(ctx: DoctorContext, dll: string | null): Check {
  const name = 'windows.windivert-files';
  const fix = `Put WinDivert.dll and ${DRIVER_FILE} of one WinDivert 2.2 x64 release beside retroflect.exe (or give ` +
    `their folder with --windivert-dir); if antivirus removed them, restore them and exclude that folder ` +
      `(docs/windows.md).`;
  if (!dll) return fail(name,
    'WinDivert.dll was not found beside the executable, in RETROFLECT_WINDIVERT_DIR or in %ProgramFiles%\\Retroflect.',
    fix, { searched: ctx.options.windivertDir ?? null });
  const sys = join(dirname(dll), DRIVER_FILE);
  const d = facts(dll);
  const s = existsSync(sys) ? facts(sys) : null;
  const evidence = { dll, driver: sys, dllFacts: d, driverFacts: s };
  if (!s) return fail(name,
    `${DRIVER_FILE} is missing beside ${dll} (quarantined by antivirus?): WinDivert fails with error 2.`, fix,
    evidence);
  if (!d) return fail(name, `${dll} is not a readable Windows DLL.`, fix, evidence);
  if (s.machine !== 'x64') return fail(name, `${DRIVER_FILE} is built for ${s.machine}, not x64.`, fix, evidence);
  if (d.version && s.version && d.version !== s.version) return fail(name,
    `WinDivert.dll is version ${d.version} but ${DRIVER_FILE} is ${s.version}: the driver refuses a DLL of another ` +
      `version.`,
    fix, evidence);
  if (!s.signed) return fail(name,
    `${DRIVER_FILE} carries no signature: Windows refuses to load an unsigned driver (error 577).`,
    `Use the signed ${DRIVER_FILE} of an official WinDivert release (docs/windows.md lists the hashes we ship).`,
    evidence);
  const version = s.version ?? d.version ?? 'unknown';
  if (!d.signed) return warning(name,
    `WinDivert ${version} is present; ${DRIVER_FILE} is signed but WinDivert.dll is not (application control such as ` +
      `Smart App Control or WDAC may block it).`,
    'Use the WinDivert.dll of an official release.', evidence);
  return pass(name, `WinDivert ${version} (WinDivert.dll and ${DRIVER_FILE}, both signed) is beside ${dirname(dll)}.`,
    evidence);
}

async function serviceCheck(ctx: DoctorContext, repairs: string[],
  holders: OpenWinDivertHandle[] | null): Promise<Check> {
  const name = 'windows.driver-service';
  const st = driverState(ctx.options.windivertDir);
  const evidence = { service: st.service, imageFile: st.imageFile, imageExists: st.imageExists,
    imageVersion: st.imageVersion, ourDriver: st.ourDriver, ourVersion: st.ourVersion, ours: st.ours, stale: st.stale };
  if (!st.service) return pass(name,
    `No ${DRIVER_SERVICE} driver service entry exists; WinDivert creates it at the engine's first open (and marks it ` +
      `for deletion, so it goes when unused).`,
    evidence);
  if (st.stale) {
    const repairFix = `Run 'retroflect doctor --repair' (or Test-Retroflect -Repair) as Administrator: it removes ` +
      `the entry when no program holds a WinDivert handle. By hand: sc.exe delete ${DRIVER_SERVICE}.`;
    if (ctx.options.repair) {
      const r = await releaseDriverService({ windivertDir: ctx.options.windivertDir, onlyStale: true,
        exceptPids: ctx.engine ? [ctx.engine.pid] : [] });
      if (r.outcome === 'removed') {
        repairs.push(r.detail);
        return pass(name, `The ${DRIVER_SERVICE} entry was stale (${st.staleReason}) and has been removed.`,
          { ...evidence, repaired: true });
      }
      return fail(name, `The ${DRIVER_SERVICE} driver service entry is stale: ${st.staleReason}. ${r.detail}`,
        repairFix, { ...evidence, repaired: false, holders: r.holders });
    }
    return fail(name,
      `The ${DRIVER_SERVICE} driver service entry is stale: ${st.staleReason}. WinDivert starts that entry instead ` +
        `of ours, so opening fails (error 2 for a missing file).`,
      repairFix, evidence);
  }
  if (st.service.state === 'running') {
    const from = st.imageVersion ? `version ${st.imageVersion}` : 'unknown version';
    if (!st.ours && st.ourVersion && st.imageVersion && st.imageVersion !== st.ourVersion) {
      return warning(name,
        `Another program's WinDivert driver (${from}, ${st.imageFile}) is loaded; ours is ${st.ourVersion}. The ` +
          `engine uses the loaded driver, and it refuses a DLL of another major version.`,
        `Stop the other WinDivert ` +
          `program${holders?.length ? ` (process ${[...new Set(holders.map((h) => h.processId))].join(', ')})` : ''} ` +
          'before starting the engine, or use the WinDivert version it ships.', evidence);
    }
    return pass(name, `The ${DRIVER_SERVICE} driver is loaded (${from}) from ${st.imageFile}.`, evidence);
  }
  return pass(name,
    `The ${DRIVER_SERVICE} driver service entry is ${st.service.state} and names ${st.imageFile} (version ` +
      `${st.imageVersion ?? 'unknown'}); it is not stale.`,
    evidence);
}

async function handlesCheck(ctx: DoctorContext, dll: string | null, holders: OpenWinDivertHandle[] | null,
  problem: string | null): Promise<Check> {
  const name = 'windows.windivert-users';
  if (!holders || !dll) return skipped(name,
    `WinDivert's REFLECT layer could not be read: ${problem ?? 'no WinDivert.dll'}.`);
  const ours = Number(ctx.engine?.backendInfo.priority ?? WINDIVERT_PRIORITY.DEFAULT);
  const rows: (OpenWinDivertHandle & { overlaps: boolean | null })[] = [];
  for (const h of holders) rows.push({ ...h, overlaps: h.layer === 0 ? await winDivertFilterOverlaps(dll, ctx.config,
    h.filter) : false });
  const evidence = { ourPriority: ours, handles: rows };
  if (!rows.length) return pass(name, 'No other program holds a WinDivert handle.', evidence);
  const describe = (h: (typeof rows)[number]): string => `process ${h.processId} (${h.layerName} layer, priority ` +
    `${h.priority}, filter ${h.filter === null ? 'unknown' : `"${h.filter}"`})`;
  const samePriority = rows.filter((h) => h.priority === ours && h.layer <= 1);
  const above = rows.filter((h) => h.priority > ours && h.layer === 0 && h.overlaps !== false);
  const inspect = `Identify it: Get-Process -Id ` +
    `${[...new Set([...samePriority, ...above].map((h) => h.processId))].join(',')}.`;
  if (samePriority.length) {
    return warning(name,
      `${samePriority.map(describe).join('; ')} use${samePriority.length === 1 ? 's' : ''} our priority ${ours}: ` +
        `with overlapping filters, the handle opened later normally sees a packet first (WinDivert ranks handles of ` +
        `equal priority by when they were opened), so which program acts first depends on which started last.`,
      `${inspect} Give the engine another priority (retroflect run --priority <n>, e.g. ${ours + 1}), or reconfigure ` +
        `or stop that tool.`, evidence);
  }
  if (above.length) {
    return warning(name,
      `${above.map(describe).join('; ')} run${above.length === 1 ? 's' : ''} above our priority ${ours} with a ` +
        `filter that catches our traffic: it sees packets to reflect addresses before the engine (a VPN would send ` +
          `them off the host).`,
      `${inspect} Start the engine with a higher --priority, or exclude the reflect addresses in that tool.`, evidence);
  }
  return pass(name,
    `${rows.length} other WinDivert handle(s), none at our priority ${ours} or above it with an overlapping filter: ` +
      `${rows.map(describe).join('; ')}.`,
    evidence);
}

function bfeCheck(): Check {
  const name = 'windows.bfe';
  const fix = 'Start-Service BFE; Set-Service BFE -StartupType Automatic (WinDivert fails with error 1753 without ' +
    'the Base Filtering Engine).';
  const s = queryService('BFE');
  if (!s) return fail(name,
    'The Base Filtering Engine service (BFE) does not exist: WinDivert cannot register its filters.', fix,
    { service: null });
  if (s.state !== 'running') return fail(name, `The Base Filtering Engine service (BFE) is ${s.state}.`, fix,
    { service: s });
  return pass(name, 'The Base Filtering Engine service (BFE) is running.', { service: s });
}

export async function windowsChecks(
  ctx: DoctorContext,
): Promise<{ checks: Check[]; repairs: string[]; sockets: BoundSocket[] | null }> {
  const repairs: string[] = [];
  const st = driverState(ctx.options.windivertDir);
  let holders: OpenWinDivertHandle[] | null = null;
  let problem: string | null = null;
  if (!ctx.admin) problem = 'it needs Administrator';
  else if (st.dll) {
    try {
      holders = await otherWinDivertHandles(st.dll, [process.pid, ...(ctx.engine ? [ctx.engine.pid] : [])]);
    } catch (err) {
      problem = (err as Error).message;
    }
  }
  const checks: Check[] = [filesCheck(ctx, st.dll)];
  checks.push(...(await guarded('windows.driver-service', () => serviceCheck(ctx, repairs, holders))));
  checks.push(await handlesCheck(ctx, st.dll, holders, problem));
  checks.push(...(await guarded('windows.bfe', async () => bfeCheck())));
  checks.push(...(await guarded('windows.code-integrity', async () => codeIntegrityCheck(st.ourDriver))));
  checks.push(...(await guarded('windows.firewall', async () => firewallCheck(ctx))));
  checks.push(...(await guarded('windows.private-ranges', async () => privateRangesCheck(ctx))));
  let sockets: BoundSocket[] | null = null;
  try {
    sockets = windowsBoundSockets();
  } catch {
    sockets = null;
  }
  return { checks, repairs, sockets };
}
