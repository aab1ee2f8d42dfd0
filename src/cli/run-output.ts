/**
 * What `retroflect run` prints: the dry-run plan and the start banner. Errors and warnings go through the shared
 * helpers in output.ts, like every other command's.
 */
import { shieldKey, type InterceptConfig } from '../config/intercept-config.ts';
import type { PlanStep } from '../packet-sources/packet-source.ts';
import type { EngineStatus } from '../engine/types.ts';
import chalk from 'chalk';
import { printWarning, renderKeyValues, renderTable } from './output.ts';

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
  process.stdout.write(renderKeyValues([
    ['config file', plan.configPath ?? chalk.dim('(none)')],
    ['control pipe', plan.pipeName],
    ['reflect', listOrNone(plan.config.reflectAddresses)],
    ['shield', listOrNone(plan.config.shieldPorts.map(shieldKey))],
    ['WinDivert filter (Windows)', plan.windivertFilter],
  ]));
  for (const w of plan.warnings) printWarning(w);
  process.stdout.write(renderTable(['step', 'detail'], plan.steps.map((s) => [s.action, s.detail])));
}

export function printRunBanner(status: EngineStatus, pipePath: string, version: string): void {
  const facts = Object.entries(status.backendInfo).map(([k, v]) => `${k} ${v}`).join(', ');
  console.log(`${chalk.green('retroflect')} ${version} running (${status.backend}${facts ? `: ${facts}` : ''})`);
  process.stdout.write(renderKeyValues([
    ['reflecting', listOrNone(status.reflectAddresses)],
    ['shielding', listOrNone(status.shieldPorts.map(shieldKey))],
    ['control', pipePath],
    ['config', status.configPath ?? chalk.dim('(none: changes are not persisted)')],
  ]));
  console.log('Reflection in progress. Press Ctrl+C to stop.');
}
