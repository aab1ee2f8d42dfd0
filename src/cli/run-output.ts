/**
 * What `retroflect run` prints: the dry-run plan, the start banner, warnings and the final error. Colour comes from
 * chalk, which already honours NO_COLOR and FORCE_COLOR and turns itself off when stdout is not a terminal.
 */
import chalk from 'chalk';
import { table } from 'table';
import { shieldKey, type InterceptConfig } from '../config/intercept-config.ts';
import type { PlanStep } from '../divert/source.ts';
import type { EngineStatus } from '../engine/types.ts';
import { ExitCode, RetroflectError, type ExitCode as ExitCodeT } from '../errors.ts';

export function warn(message: string): void {
  console.error(`${chalk.yellow('warning:')} ${message}`);
}

/** Print an error the way every command does (message, then what to do) and return its exit code. */
export function fail(err: unknown): ExitCodeT {
  if (err instanceof RetroflectError) {
    console.error(`${chalk.red('error:')} ${err.message}${chalk.dim(` [${err.code}]`)}`);
    if (err.hint) console.error(`${chalk.cyan('hint:')} ${err.hint}`);
    return err.exitCode;
  }
  const e = err as Error;
  console.error(`${chalk.red('error:')} ${e?.stack ?? String(err)}`);
  return ExitCode.FAILURE;
}

function listOrNone(items: string[]): string {
  return items.length ? items.join(', ') : chalk.dim('(none)');
}

export function printPlan(plan: {
  config: InterceptConfig;
  configPath: string | null;
  pipeName: string;
  steps: PlanStep[];
  windivertFilter: string;
  warnings: string[];
}): void {
  console.log(chalk.bold('Dry run: nothing will be changed.'));
  console.log(`Config file:      ${plan.configPath ?? chalk.dim('(none)')}`);
  console.log(`Control pipe:     ${plan.pipeName}`);
  console.log(`Reflect:          ${listOrNone(plan.config.reflectAddresses)}`);
  console.log(`Shield:           ${listOrNone(plan.config.shieldPorts.map(shieldKey))}`);
  for (const w of plan.warnings) warn(w);
  if (plan.steps.length) {
    console.log(table([[chalk.bold('Step'), chalk.bold('Detail')], ...plan.steps.map((s) => [s.action, s.detail])], {
      columns: { 1: { width: 80, wrapWord: true } },
    }));
  }
  console.log(`WinDivert filter (Windows): ${plan.windivertFilter}`);
}

export function printRunBanner(status: EngineStatus, pipePath: string, version: string): void {
  const device = Object.entries(status.backendInfo).map(([k, v]) => `${k}=${v}`).join(' ');
  console.log(`${chalk.green('retroflect')} ${version} running (${status.backend}${device ? `, ${device}` : ''})`);
  console.log(`  reflecting: ${listOrNone(status.reflectAddresses)}`);
  console.log(`  shielding:  ${listOrNone(status.shieldPorts.map(shieldKey))}`);
  console.log(`  control:    ${pipePath}`);
  console.log('Reflection in progress. Press Ctrl+C to stop.');
}
