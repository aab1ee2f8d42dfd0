/**
 * `retroflect doctor [--json] [--repair]`: what is wrong on this host and what exactly to change. Exit code 0 when
 * no check failed (warnings allowed), CHECK_FAILED (12) when one did.
 */
import chalk from 'chalk';
import type { Command } from 'commander';
import { doctorExitCode, type Check, type CheckStatus, type DoctorReport } from '../doctor/check.ts';
import { runDoctor } from '../doctor/doctor.ts';
import { printJson, reportError } from './output.ts';

interface DoctorCliOptions {
  pipe?: string;
  json?: boolean;
  repair?: boolean;
  config?: string;
  windivertDir?: string;
}

const MARK: Record<CheckStatus, string> = { pass: chalk.green('PASS'), warning: chalk.yellow('WARN'),
  fail: chalk.red('FAIL'), skipped: chalk.dim('SKIP') };

function printCheck(c: Check): void {
  process.stdout.write(`${MARK[c.status]}  ${chalk.bold(c.name)}: ${c.detail}\n`);
  if (c.fix && c.status !== 'pass') process.stdout.write(`      ${chalk.dim('fix:')} ${c.fix}\n`);
}

function printReport(r: DoctorReport): void {
  for (const c of r.checks) printCheck(c);
  for (const what of r.repairs) process.stdout.write(`${chalk.green('repaired:')} ${what}\n`);
  const s = r.summary;
  process.stdout.write(`\n${s.pass} passed, ${s.warning} warning(s), ${s.fail} failed, ${s.skipped} ` +
    `skipped${r.engineRunning ? '' : ' (no engine running)'}.\n`);
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('Check whether retroflect works on this host and say what to change (exit 12 when a check fails).')
    .option('-p, --pipe <name>',
      'control pipe name (Linux: or socket path) of the engine to check; default: retroflect')
    .option('-c, --config <path>', 'config file to check when no engine runs (default: the engine\'s default path)')
    .option('--windivert-dir <dir>',
      'Windows: folder of WinDivert.dll and WinDivert64.sys (default: beside the executable)')
    .option('--repair', 'fix what is safe to fix (a stale WinDivert driver service entry no program uses)')
    .option('--json', 'print the report as JSON (stable, docs/doctor.md)')
    .action(async (opts: DoctorCliOptions) => {
      try {
        const report = await runDoctor({ pipe: opts.pipe, config: opts.config, repair: opts.repair === true,
          windivertDir: opts.windivertDir });
        if (opts.json) printJson(report);
        else printReport(report);
        process.exitCode = doctorExitCode(report.checks);
      } catch (err) {
        process.exitCode = reportError(err, opts.json === true);
      }
    });
}
