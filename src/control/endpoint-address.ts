/**
 * The control endpoint's address, for the engine and its clients alike: where the control channel lives on each
 * platform (docs/protocol.md "Transport and pipe naming").
 *  - Windows: named pipe `\\.\pipe\<name>`; the access token next to the config in `%ProgramData%\Retroflect`.
 *  - Linux: Unix socket `/run/retroflect/<name>.sock`, or an absolute path as given (what .NET's
 *    NamedPipeClientStream uses as is when handed a rooted pipe name).
 */
import { ErrorCode, RetroflectError } from '../errors.ts';

/** Pipe name used when none is given. */
export const DEFAULT_PIPE_NAME = 'retroflect';
/** Directory of named sockets on Linux; created root-owned, mode 0700. */
export const UNIX_SOCKET_DIR = '/run/retroflect';
/** What a pipe name may contain: no separators, nothing a path could escape with. */
const PIPE_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

export interface ControlEndpoint {
  /** What the user gave (or the default): shown in status as `pipeName`. */
  name: string;
  /** What net.Server.listen / net.connect take. */
  path: string;
  /** Windows: file with the access token clients must send in hello. */
  tokenPath: string;
}

/** The pipe name (or Linux socket path) to use: `--pipe` wins, then env RETROFLECT_PIPE, then the default. */
export function resolvePipeName(pipe?: string, env: NodeJS.ProcessEnv = process.env): string {
  return pipe !== undefined && pipe !== '' ? pipe : env.RETROFLECT_PIPE || DEFAULT_PIPE_NAME;
}

export function resolveEndpoint(
  pipe: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
): ControlEndpoint {
  const given = resolvePipeName(pipe, env);
  if (platform === 'win32') {
    const name = given.replace(/^\\\\\.\\pipe\\/i, '');
    checkName(name, given);
    const programData = env.ProgramData ?? env.PROGRAMDATA ?? 'C:\\ProgramData';
    return { name, path: `\\\\.\\pipe\\${name}`, tokenPath: `${programData}\\Retroflect\\${name}.token` };
  }
  if (given.startsWith('/')) {
    if (given.includes('\0') || given.endsWith('/')) throw badPipe(given);
    return { name: given, path: given, tokenPath: `${given}.token` };
  }
  checkName(given, given);
  return { name: given, path: `${UNIX_SOCKET_DIR}/${given}.sock`, tokenPath: `${UNIX_SOCKET_DIR}/${given}.token` };
}

function checkName(name: string, given: string): void {
  if (!PIPE_NAME_RE.test(name) || name === '.' || name === '..') throw badPipe(given);
}

function badPipe(given: string): RetroflectError {
  return new RetroflectError(ErrorCode.INVALID_PARAMS, `'${given}' is not a usable pipe name.`, {
    hint:
      process.platform === 'win32'
        ? 'Use 1-64 letters, digits, dots, underscores or dashes (default: retroflect).'
        : 'Use 1-64 letters, digits, dots, underscores or dashes, or an absolute socket path (default: retroflect).',
    details: { pipe: given },
  });
}
