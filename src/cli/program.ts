/**
 * The `retroflect` command's program. `run` hosts the engine; every other command is a client of a running engine's
 * pipe. Loaded by main.ts once it watches the stop signals.
 */
import { Command, CommanderError } from 'commander';
import { ExitCode } from '../errors.ts';
import { VERSION } from '../version.ts';
import { registerClientCommands } from './client-commands.ts';
import { guardOutput, outputFailed } from './output.ts';
import { registerRunCommand } from './run-command.ts';
import { registerCaptureCommands } from './capture-commands.ts';
import { registerDoctorCommand } from './doctor-command.ts';
import { registerDriverCommand } from './driver-command.ts';

export function buildProgram(): Command {
  const program = new Command('retroflect')
    .description('Reflect traffic this host sends to chosen addresses back into it as inbound, so sandboxed (UWP/AppContainer) apps reach local servers.')
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(run retroflect --help for usage)')
    .exitOverride();
  registerRunCommand(program);
  registerClientCommands(program);
  registerCaptureCommands(program);
  registerDoctorCommand(program);
  registerDriverCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  guardOutput();
  try {
    await buildProgram().parseAsync(argv);
    const code = Number(process.exitCode ?? ExitCode.OK);
    // A closed pipe reports EPIPE from a later tick: wait one turn so every write's outcome is known.
    await new Promise((resolve) => setImmediate(resolve));
    // A client command whose result could not be printed did not do its job for the script that ran it. `run` is
    // exempt: its output is a log, and the engine's own outcome is what its exit code reports.
    if (code === ExitCode.OK && outputFailed() && argv[2] !== 'run') return ExitCode.OUTPUT_FAILED;
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      return err.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
    }
    throw err;
  }
}

/** Run the command line and set the process's exit code. */
export function runCli(argv: string[]): Promise<void> {
  return main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = ExitCode.FAILURE;
    },
  );
}
