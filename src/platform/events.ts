/**
 * The events catalogue: everything the engine tells an admin's log tools (Windows Event Log, journald, the log
 * file), each with a stable event ID an admin filters on. The IDs are documented in docs/windows.md ("Event Log");
 * scripts and monitoring rely on them, so never renumber. Ranges: 1xxx information, 2xxx warnings, 3xxx errors.
 */

export type EventLevel = 'info' | 'warning' | 'error';

export interface EventKind {
  readonly id: number;
  readonly level: EventLevel;
  /** A short name, printed before the text in the log file and on the console. */
  readonly name: string;
}

export const EngineEvent = {
  /** The engine runs: version, backend, reflect addresses, shield ports, control pipe. */
  STARTED: { id: 1000, level: 'info', name: 'started' },
  /** The engine stopped, and why (signal, `stop` through the pipe, service control, failure) with its exit code. */
  STOPPED: { id: 1001, level: 'info', name: 'stopped' },
  /** The reflect addresses, shield ports or port maps changed through the control pipe. */
  CONFIG_CHANGED: { id: 1100, level: 'info', name: 'configuration changed' },
  /** A client started a capture or trace. */
  CAPTURE_STARTED: { id: 1200, level: 'info', name: 'capture started' },
  /** A capture or trace ended. */
  CAPTURE_STOPPED: { id: 1201, level: 'info', name: 'capture stopped' },
  /** Host state someone else removed (routes, firewall table, filter) was put back. */
  HOST_REPAIRED: { id: 2000, level: 'warning', name: 'host state repaired' },
  /** A reflect address, shield port or port map was refused (at start or through the pipe), with the reason. */
  REFUSED: { id: 2100, level: 'warning', name: 'address or port refused' },
  /** The engine could not start (config, privileges, another engine on the pipe...). */
  START_FAILED: { id: 3000, level: 'error', name: 'start failed' },
  /** The packet backend is unavailable or failed while running, with the plain-language explanation. */
  BACKEND_FAILED: { id: 3001, level: 'error', name: 'backend failed' },
} as const satisfies Record<string, EventKind>;

/** syslog priority of each level (sd-daemon(3) prefixes `<3>` error, `<4>` warning, `<6>` info). */
export const SYSLOG_PRIORITY: Record<EventLevel, number> = { error: 3, warning: 4, info: 6 };
