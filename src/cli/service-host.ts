/**
 * `retroflect run --service`: the engine as the Windows service `Retroflect` (platform/windows/service.ts). Paths
 * come from the known ProgramData folder, the log goes to %ProgramData%\Retroflect\logs\engine.log unless
 * --log-file says otherwise, a stop or (pre-)shutdown control stops the engine cleanly, and the engine's exit code
 * becomes the service-specific exit code `sc query` shows (README's exit-code table).
 */
import { join } from 'node:path';
import { ErrorCode, ExitCode, RetroflectError } from '../errors.ts';
import { runEngine, type RunOptions } from './run-engine.ts';
import { reportError } from './output.ts';

const WHY: Record<'stop' | 'shutdown' | 'preshutdown', string> = {
  stop: 'the service was stopped through the Service Control Manager',
  preshutdown: 'Windows is shutting down (pre-shutdown)',
  shutdown: 'Windows is shutting down',
};

/** The default log file of the service, under the known ProgramData folder. */
export function serviceLogFile(programData: string): string {
  return join(programData, 'Retroflect', 'logs', 'engine.log');
}

export async function runService(opts: RunOptions): Promise<ExitCode> {
  if (process.platform !== 'win32') {
    const message = '--service runs the engine as a Windows service; on Linux systemd runs `retroflect run` as it is.';
    return reportError(new RetroflectError(ErrorCode.USAGE, message, {
      hint: 'Install the systemd unit with Install-Retroflect, or run `retroflect run`.',
    }), false);
  }
  const { programDataFolder } = await import('../platform/windows/known-folders.ts');
  const { runServiceDispatcher, SERVICE_NAME, ServiceDispatcherError } = await import('../platform/windows/service.ts');
  // One ProgramData for everything that reads it (config, control token, koffi runtime, logs): the known folder.
  const programData = programDataFolder();
  if (programData) process.env.ProgramData = programData;
  // The SCM starts services in C:\Windows: nothing may depend on the working folder.
  process.chdir(process.env.ProgramData ?? process.env.SystemRoot ?? 'C:\\');
  const logFile = opts.logFile ?? serviceLogFile(process.env.ProgramData ?? 'C:\\ProgramData');
  const options: RunOptions = { ...opts, logFile };
  let code: ExitCode = ExitCode.FAILURE;
  try {
    await runServiceDispatcher(SERVICE_NAME, (session) => {
      const stopRequest = new Promise<string>((resolve) => (session.onControl = (control) => resolve(WHY[control])));
      const host = { stopRequest, ready: () => session.running(), stopping: () => session.stopping() };
      void runEngine(options, host).then((c) => {
        code = c;
        session.stopped(c);
      });
    });
  } catch (err) {
    if (err instanceof ServiceDispatcherError && !err.startedByScm) {
      const message = '--service is for the Service Control Manager: this process was not started as a service.';
      return reportError(new RetroflectError(ErrorCode.USAGE, message, {
        hint: 'Start it with Start-Service Retroflect (or sc.exe start Retroflect), or leave out --service.',
      }), false);
    }
    return reportError(err, false);
  }
  return code;
}
