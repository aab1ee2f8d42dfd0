/**
 * The catalogue of refusals that more than one part of retroflect can raise (as undici's lib/core/errors.js and
 * fastify's lib/errors.js keep theirs): each is worded here once, so the same refusal reads the same from the CLI,
 * over the pipe and in PowerShell (which matches on the code, and shows message and hint). Refusals only one module
 * can meet stay in that module (the WinDivert error table, the config file checks).
 */
import { ErrorCode, RetroflectError } from './errors.ts';

const AS_ADMIN_HINT = process.platform === 'win32' ? 'Run the command as Administrator.' : 'Run the command as root (sudo).';

// E_INVALID_PORT ------------------------------------------------------------------------------------------------

/** `input` as the user gave it (a spec such as "8080/tcp", a number, or a `{port, protocol}` object). */
export function invalidShieldPort(input: unknown): RetroflectError {
  const shown = typeof input === 'string' ? input : JSON.stringify(input);
  return new RetroflectError(ErrorCode.INVALID_PORT, `'${shown}' is not a shield port.`, {
    hint: 'Give a port from 1 to 65535, optionally with /tcp or /udp (8080, 8080/tcp, 53/udp), or {"port": 8080, "protocol": "tcp"}.',
    details: { port: input },
  });
}

// E_LIMIT_REACHED -----------------------------------------------------------------------------------------------

export function tooManyReflectAddresses(max: number): RetroflectError {
  return new RetroflectError(ErrorCode.LIMIT_REACHED, `At most ${max} reflect addresses are supported.`, {
    hint: 'Remove addresses you no longer use.',
  });
}

export function tooManyShieldPorts(max: number): RetroflectError {
  return new RetroflectError(ErrorCode.LIMIT_REACHED, `At most ${max} shield ports are supported.`, {
    hint: 'Remove shield ports you no longer use.',
  });
}

// E_ADDRESS_NOT_FOUND / E_PORT_NOT_FOUND ------------------------------------------------------------------------

/** `runningOnly`: the request was temporary, so only running (not persisted) entries counted. */
export function addressNotFound(missing: string[], runningOnly: boolean): RetroflectError {
  return new RetroflectError(
    ErrorCode.ADDRESS_NOT_FOUND,
    `${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not ${runningOnly ? 'a running' : 'a'} reflect address; nothing was removed.`,
    { hint: "List the configured addresses with 'retroflect address list'.", details: { missing } },
  );
}

/** `keys` as "8080/tcp"; `missing` is what details carry (the ShieldPort objects). */
export function portNotFound(keys: string[], missing: unknown[]): RetroflectError {
  return new RetroflectError(ErrorCode.PORT_NOT_FOUND, `${keys.join(', ')} ${keys.length === 1 ? 'is' : 'are'} not shielded; nothing was removed.`, {
    hint: "List the shield ports with 'retroflect shield list'.",
    details: { missing },
  });
}

// E_MANAGED_BY_POLICY -------------------------------------------------------------------------------------------

/** `entries` as shown ("198.51.100.7", "8080/tcp", "198.51.100.7 80=8080/tcp"); `origin` names the policy. */
export function managedByPolicy(entries: string[], action: string, origin: string): RetroflectError {
  return new RetroflectError(
    ErrorCode.MANAGED_BY_POLICY,
    `${entries.join(', ')} ${entries.length === 1 ? 'is' : 'are'} set by managed policy (${origin}) and cannot be ${action} here; nothing was changed.`,
    { hint: 'Ask the administrator who manages the policy (Group Policy, Intune or the policy file) to change it.', details: { entries, origin } },
  );
}

/** The policy locks the engine (`lockChanges`): `action` ("adding reflect addresses") is refused whatever it names. */
export function lockedByPolicy(action: string, origin: string): RetroflectError {
  return new RetroflectError(
    ErrorCode.MANAGED_BY_POLICY,
    `Retroflect's configuration is locked by managed policy (${origin}): ${action} through the control pipe is ` +
      'refused; nothing was changed.',
    {
      hint: 'Ask the administrator who manages the policy (Group Policy, Intune or the policy file) to make the ' +
        'change there, or to lift the lock (LockChanges / lockChanges).',
      details: { entries: [], origin, locked: true },
    },
  );
}

// E_ACCESS_DENIED -----------------------------------------------------------------------------------------------

export function accessDenied(message: string, hint: string, details?: Record<string, unknown>): RetroflectError {
  return new RetroflectError(ErrorCode.ACCESS_DENIED, message, { hint, details });
}

/** The control pipe refused this client: not root (Linux peer credentials) or the OS denied opening the pipe. */
export function controlAccessDenied(message: string, details: Record<string, unknown> = {}, cause?: unknown): RetroflectError {
  return new RetroflectError(ErrorCode.ACCESS_DENIED, message, { hint: AS_ADMIN_HINT, details, cause });
}

// E_ALREADY_RUNNING ---------------------------------------------------------------------------------------------

export function alreadyServing(path: string, pipe: string): RetroflectError {
  return new RetroflectError(ErrorCode.ALREADY_RUNNING, `A retroflect engine is already serving ${path}.`, {
    hint: "Use the running engine (retroflect status), stop it with 'retroflect stop', or start this one with another --pipe.",
    details: { pipe },
  });
}

// E_INVALID_PARAMS / E_BAD_REQUEST ------------------------------------------------------------------------------

export function invalidParams(message: string, field: string): RetroflectError {
  return new RetroflectError(ErrorCode.INVALID_PARAMS, message, {
    hint: 'See docs/protocol.md for the parameters of each method.',
    details: { field },
  });
}

export function badRequest(message: string): RetroflectError {
  return new RetroflectError(ErrorCode.BAD_REQUEST, message, {
    hint: 'Send one JSON object per line: {"id": 1, "method": "status", "params": {}}.',
  });
}

// E_INTERNAL ----------------------------------------------------------------------------------------------------

/** Anything thrown that is not a RetroflectError: a bug. */
export function internalError(err: unknown): RetroflectError {
  return new RetroflectError(ErrorCode.INTERNAL, `Internal error: ${(err as Error)?.message ?? String(err)}`, {
    hint: 'This is a bug; please report it with the engine log.',
    cause: err,
  });
}
