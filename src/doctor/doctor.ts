/**
 * `retroflect doctor` / `Test-Retroflect`: every check in a fixed order, with or without a running engine, into one
 * report. Each platform's checks live in their own module and are imported only on that platform.
 */
import { VERSION } from '../version.ts';
import { guarded, summarize, type Check, type DoctorReport } from './check.ts';
import { addressChecks, configCheck, engineCheck, portChecks, privilegesCheck } from './common.ts';
import { gatherContext, type DoctorContext, type DoctorOptions } from './context.ts';
import type { BoundSocket } from './listeners.ts';

interface PlatformChecks {
  checks: Check[];
  repairs: string[];
  sockets: BoundSocket[] | null;
}

async function platformChecks(ctx: DoctorContext): Promise<PlatformChecks> {
  if (ctx.platform === 'linux') {
    const { linuxChecks } = await import('./linux.ts');
    const { linuxBoundSockets } = await import('./listeners.ts');
    return { checks: await linuxChecks(ctx), repairs: [], sockets: linuxBoundSockets() };
  }
  if (ctx.platform === 'win32') {
    const { windowsChecks } = await import('./windows.ts');
    return windowsChecks(ctx);
  }
  return { checks: [], repairs: [], sockets: null };
}

export async function runDoctor(options: DoctorOptions = {}): Promise<DoctorReport> {
  const ctx = await gatherContext(options);
  try {
    const checks: Check[] = [privilegesCheck(ctx), configCheck(ctx)];
    // Platform first: the engine's host state is read before anything asks the engine for stats (on Linux a
    // failed stats read makes the engine repair that state, which would hide what the doctor is here to see).
    let platform: PlatformChecks = { checks: [], repairs: [], sockets: null };
    const platformResult = await guarded(`${ctx.platform === 'win32' ? 'windows' : ctx.platform}.checks`, async () => {
      platform = await platformChecks(ctx);
      return [];
    });
    checks.push(...platform.checks, ...platformResult);
    checks.push(...(await guarded('address', () => addressChecks(ctx))));
    checks.push(...(await guarded('port', () => portChecks(ctx, platform.sockets))));
    checks.push(...(await guarded('engine', () => engineCheck(ctx))));
    return { version: VERSION, platform: ctx.platform, engineRunning: ctx.engine !== null, summary: summarize(checks),
      checks, repairs: platform.repairs };
  } finally {
    ctx.close();
  }
}
