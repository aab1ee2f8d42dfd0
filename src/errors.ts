/**
 * Every failure a user or a script can see carries a stable code (like undici's `UND_ERR_*`), a message that says
 * what happened, a hint that says what to do, and the process exit code the CLI ends with.
 */

/** Process exit codes of the CLI. Documented in README.md; scripts rely on them, so never renumber. */
export const ExitCode = {
  OK: 0,
  /** Anything not covered below. */
  FAILURE: 1,
  /** Bad command line (unknown option, missing argument). */
  USAGE: 2,
  /** Not root / not Administrator. */
  NOT_ADMIN: 3,
  /** A reflect address or shield port was refused by validation. */
  INVALID_ARGUMENT: 4,
  /** The packet backend cannot start (no /dev/net/tun, no WinDivert, driver refused). */
  BACKEND_UNAVAILABLE: 5,
  /** The config file is unreadable or invalid; it was left as it was. */
  CONFIG_INVALID: 6,
  /** A client command found no engine answering on the pipe. */
  ENGINE_NOT_RUNNING: 7,
  /** `run` found another engine already serving the pipe. */
  ALREADY_RUNNING: 8,
  /** The engine answered with an error (not found, conflict, ...). */
  REQUEST_FAILED: 9,
  /** The engine has as many control connections open as it serves; try again later. */
  ENGINE_BUSY: 10,
  /** The command worked but its output could not be written (closed pipe, full disk); nothing more is printed. */
  OUTPUT_FAILED: 11,
  /** `doctor`: at least one check failed (warnings alone end with 0). */
  CHECK_FAILED: 12,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Stable error codes. Shared by the CLI, the pipe protocol and the PowerShell module (see docs/protocol.md). */
export const ErrorCode = {
  NOT_ADMIN: 'E_NOT_ADMIN',
  INVALID_ADDRESS: 'E_INVALID_ADDRESS',
  INVALID_PORT: 'E_INVALID_PORT',
  ADDRESS_NOT_FOUND: 'E_ADDRESS_NOT_FOUND',
  PORT_NOT_FOUND: 'E_PORT_NOT_FOUND',
  /** A port map clashes with one already on the address (same port to another target, shared target, chain). */
  PORT_MAP_CONFLICT: 'E_PORT_MAP_CONFLICT',
  LIMIT_REACHED: 'E_LIMIT_REACHED',
  /** The entry is set by managed policy (Group Policy / Intune / policy.json): the pipe may not change it. */
  MANAGED_BY_POLICY: 'E_MANAGED_BY_POLICY',
  BACKEND_UNAVAILABLE: 'E_BACKEND_UNAVAILABLE',
  BACKEND_FAILED: 'E_BACKEND_FAILED',
  CONFIG_INVALID: 'E_CONFIG_INVALID',
  CONFIG_WRITE_FAILED: 'E_CONFIG_WRITE_FAILED',
  ENGINE_NOT_RUNNING: 'E_ENGINE_NOT_RUNNING',
  ALREADY_RUNNING: 'E_ALREADY_RUNNING',
  ACCESS_DENIED: 'E_ACCESS_DENIED',
  BAD_REQUEST: 'E_BAD_REQUEST',
  UNKNOWN_METHOD: 'E_UNKNOWN_METHOD',
  INVALID_PARAMS: 'E_INVALID_PARAMS',
  UNSUPPORTED_VERSION: 'E_UNSUPPORTED_VERSION',
  TIMEOUT: 'E_TIMEOUT',
  ENGINE_BUSY: 'E_ENGINE_BUSY',
  USAGE: 'E_USAGE',
  /** The CLI's output (a capture file, stdout) could not be written: full disk, reader gone, write error. */
  OUTPUT_FAILED: 'E_OUTPUT_FAILED',
  /** The CLI refused to write where it was pointed (a symbolic link, a device, someone else's file). */
  OUTPUT_REFUSED: 'E_OUTPUT_REFUSED',
  INTERNAL: 'E_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const exitCodeByError: Partial<Record<ErrorCode, ExitCode>> = {
  [ErrorCode.NOT_ADMIN]: ExitCode.NOT_ADMIN,
  [ErrorCode.ACCESS_DENIED]: ExitCode.NOT_ADMIN,
  [ErrorCode.INVALID_ADDRESS]: ExitCode.INVALID_ARGUMENT,
  [ErrorCode.INVALID_PORT]: ExitCode.INVALID_ARGUMENT,
  [ErrorCode.PORT_MAP_CONFLICT]: ExitCode.INVALID_ARGUMENT,
  [ErrorCode.BACKEND_UNAVAILABLE]: ExitCode.BACKEND_UNAVAILABLE,
  [ErrorCode.BACKEND_FAILED]: ExitCode.BACKEND_UNAVAILABLE,
  [ErrorCode.CONFIG_INVALID]: ExitCode.CONFIG_INVALID,
  [ErrorCode.ENGINE_NOT_RUNNING]: ExitCode.ENGINE_NOT_RUNNING,
  [ErrorCode.ALREADY_RUNNING]: ExitCode.ALREADY_RUNNING,
  [ErrorCode.ADDRESS_NOT_FOUND]: ExitCode.REQUEST_FAILED,
  [ErrorCode.PORT_NOT_FOUND]: ExitCode.REQUEST_FAILED,
  [ErrorCode.LIMIT_REACHED]: ExitCode.REQUEST_FAILED,
  [ErrorCode.MANAGED_BY_POLICY]: ExitCode.REQUEST_FAILED,
  [ErrorCode.ENGINE_BUSY]: ExitCode.ENGINE_BUSY,
  [ErrorCode.USAGE]: ExitCode.USAGE,
  [ErrorCode.OUTPUT_FAILED]: ExitCode.OUTPUT_FAILED,
  [ErrorCode.OUTPUT_REFUSED]: ExitCode.USAGE,
};

export class RetroflectError extends Error {
  readonly code: ErrorCode;
  /** What the user should do about it; shown after the message. */
  readonly hint: string | undefined;
  /** Extra machine-readable facts (the address refused, the rule that failed, the Windows error number...). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RetroflectError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }

  get exitCode(): ExitCode {
    return exitCodeByError[this.code] ?? ExitCode.FAILURE;
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

export function isRetroflectError(err: unknown): err is RetroflectError {
  return err instanceof RetroflectError;
}
