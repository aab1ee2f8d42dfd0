/**
 * WinDivert failures as RetroflectErrors: what happened, in words an admin can act on, with the Windows error code
 * in `details.windowsError`. Codes and their causes follow the WinDivertOpen documentation.
 */
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { WinError } from './ffi.ts';

export interface OpenContext {
  /** The WinDivert.dll in use (its folder must also hold WinDivert64.sys). */
  dllPath: string;
  filter: string;
  priority: number;
}

/** Map the GetLastError code of a failed WinDivertOpen. */
export function winDivertOpenError(code: number, ctx: OpenContext): RetroflectError {
  const details = { windowsError: code, dllPath: ctx.dllPath, filter: ctx.filter, priority: ctx.priority };
  switch (code) {
    case WinError.ACCESS_DENIED:
      return new RetroflectError(ErrorCode.NOT_ADMIN, 'WinDivert refused to open: retroflect is not running as Administrator (Windows error 5).', {
        hint: 'Run it from an elevated PowerShell ("Run as administrator") or as a service under LocalSystem.',
        details,
      });
    case WinError.FILE_NOT_FOUND:
      return new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, `The WinDivert driver file WinDivert64.sys was not found next to ${ctx.dllPath} (Windows error 2).`, {
        hint: 'Put WinDivert64.sys from the same WinDivert 2.x release in the folder of WinDivert.dll, or point --windivert-dir at a folder that has both.',
        details,
      });
    case WinError.INVALID_IMAGE_HASH:
      return new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, 'Windows rejected the signature of the WinDivert driver (Windows error 577).', {
        hint: 'Use the signed WinDivert64.sys of an official WinDivert 2.x release, unmodified; on Secure Boot machines test-signed drivers do not load.',
        details,
      });
    case WinError.DRIVER_BLOCKED:
      return new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, 'Windows blocked the WinDivert driver from loading (Windows error 1275).', {
        hint: 'Security software (or a virtual machine without driver support) is blocking it: allow WinDivert64.sys in that software, or run on a host that permits kernel drivers.',
        details,
      });
    case WinError.INVALID_PARAMETER:
      return new RetroflectError(ErrorCode.BACKEND_FAILED, 'WinDivert rejected the packet filter, layer or priority (Windows error 87).', {
        hint: 'This is a retroflect bug: report it with the filter shown in details. Removing some reflect addresses or shield ports may work around it.',
        details,
      });
    case WinError.DRIVER_FAILED_PRIOR_UNLOAD:
      return new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, 'An incompatible version of the WinDivert driver is already loaded (Windows error 654).', {
        hint: 'Stop other programs that use WinDivert (or `sc.exe stop WinDivert`), or reboot, then start retroflect again.',
        details,
      });
    case WinError.SERVICE_DOES_NOT_EXIST:
      return new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, 'The WinDivert driver service is not installed (Windows error 1060).', {
        hint: 'Start retroflect as Administrator once so WinDivert can install its driver.',
        details,
      });
    case WinError.EPT_S_NOT_REGISTERED:
      return new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, 'The Base Filtering Engine service is not running, and WinDivert needs it (Windows error 1753).', {
        hint: 'Start it from an elevated PowerShell: Set-Service BFE -StartupType Automatic; Start-Service BFE.',
        details,
      });
    default:
      return new RetroflectError(ErrorCode.BACKEND_FAILED, `WinDivert could not open a handle (Windows error ${code}).`, {
        hint: 'Look the code up with `net helpmsg ' + code + '`; if it persists, report it with the details shown.',
        details,
      });
  }
}

/** WinDivert.dll itself could not be found or loaded. */
export function winDivertLoadError(searched: readonly string[], cause?: unknown): RetroflectError {
  const found = cause !== undefined;
  return new RetroflectError(
    ErrorCode.BACKEND_UNAVAILABLE,
    found ? `WinDivert.dll could not be loaded from ${searched[0]}.` : 'WinDivert.dll was not found.',
    {
      hint: found
        ? 'Use the 64-bit WinDivert.dll of a WinDivert 2.x release (with WinDivert64.sys beside it).'
        : 'Put WinDivert.dll and WinDivert64.sys (WinDivert 2.x, 64-bit) next to retroflect.exe, or give their folder with --windivert-dir or RETROFLECT_WINDIVERT_DIR.',
      details: { searched: [...searched], ...(found ? { reason: String((cause as Error)?.message ?? cause) } : {}) },
      cause,
    },
  );
}

/** A WinDivert call that should not fail did (set/get param, receive, send). */
export function winDivertCallError(call: string, code: number, details: Record<string, unknown> = {}): RetroflectError {
  return new RetroflectError(ErrorCode.BACKEND_FAILED, `${call} failed (Windows error ${code}).`, {
    hint: 'Restart retroflect; if it happens again, report it with the details shown.',
    details: { windowsError: code, call, ...details },
  });
}

/** A queue setting outside WinDivert's documented range (checked before any handle is opened). */
export function queueParamError(name: string, value: number, min: number, max: number): RetroflectError {
  return new RetroflectError(ErrorCode.BACKEND_FAILED, `WinDivert ${name} ${value} is outside ${min}..${max}.`, {
    hint: `Give a ${name} from ${min} to ${max}.`,
    details: { param: name, value, min, max },
  });
}
