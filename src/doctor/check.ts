/**
 * What one doctor check reports, and how a list of them turns into an exit code. The shape is the `--json` output
 * (docs/doctor.md) and the PowerShell `Retroflect.Check` object: stable, scripts read it.
 */
import { ExitCode } from '../errors.ts';

/** Outcome of one check. `fail`: retroflect will not work (or not fully) until the fix is applied. */
export type CheckStatus = 'pass' | 'warning' | 'fail' | 'skipped';

export interface Check {
  /** Stable id, dotted: `privileges`, `address.192.0.2.1`, `port.8080/tcp`, `linux.nft-table`,
   *  `windows.driver-service`. */
  name: string;
  status: CheckStatus;
  /** What was found, in one or two sentences. */
  detail: string;
  /** What to change (a command where there is one); null when nothing needs doing. */
  fix: string | null;
  /** The facts the verdict rests on, as data (paths, values, counts). */
  evidence: Record<string, unknown>;
}

export function pass(name: string, detail: string, evidence: Record<string, unknown> = {}): Check {
  return { name, status: 'pass', detail, fix: null, evidence };
}

export function warning(name: string, detail: string, fix: string, evidence: Record<string, unknown> = {}): Check {
  return { name, status: 'warning', detail, fix, evidence };
}

export function fail(name: string, detail: string, fix: string, evidence: Record<string, unknown> = {}): Check {
  return { name, status: 'fail', detail, fix, evidence };
}

export function skipped(name: string, detail: string, evidence: Record<string, unknown> = {}): Check {
  return { name, status: 'skipped', detail, fix: null, evidence };
}

/** A check that threw is reported as failed with its error, never lost. */
export async function guarded(name: string, run: () => Promise<Check | Check[]>): Promise<Check[]> {
  try {
    const r = await run();
    return Array.isArray(r) ? r : [r];
  } catch (err) {
    const e = err as { message?: string; hint?: string };
    return [fail(name, `The check could not run: ${e.message ?? String(err)}`,
      e.hint ?? 'Run the doctor as root / Administrator; if it persists, report it with this output.')];
  }
}

export interface DoctorReport {
  version: string;
  platform: NodeJS.Platform;
  /** Whether an engine answered on the pipe (its live state was checked too). */
  engineRunning: boolean;
  summary: Record<CheckStatus, number>;
  checks: Check[];
  /** What --repair changed (empty without it). */
  repairs: string[];
}

export function summarize(checks: readonly Check[]): Record<CheckStatus, number> {
  const s: Record<CheckStatus, number> = { pass: 0, warning: 0, fail: 0, skipped: 0 };
  for (const c of checks) s[c.status]++;
  return s;
}

/** Warnings alone do not fail the run: only a failed check gives CHECK_FAILED. */
export function doctorExitCode(checks: readonly Check[]): ExitCode {
  return checks.some((c) => c.status === 'fail') ? ExitCode.CHECK_FAILED : ExitCode.OK;
}
