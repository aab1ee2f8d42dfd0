/**
 * Windows: the engine's events in the Event Log (Application log, source `Retroflect`), through advapi32's
 * RegisterEventSourceW / ReportEventW bound with koffi. Install-Retroflect registers the source with .NET's
 * EventLogMessages.dll as its message file (every ID there reads "%1"), so Event Viewer shows our text as the
 * message and our ID as the event ID; an unregistered source still logs, with Event Viewer's "description cannot
 * be found" preamble. Reporting never fails the engine: an Event Log that refuses is skipped.
 */
import { type EventKind, type EventLevel } from '../events.ts';

/** The source name, also registered by the PowerShell module (Private/Installation.ps1). */
export const EVENT_SOURCE = 'Retroflect';

const EVENT_TYPE: Record<EventLevel, number> = { error: 0x0001, warning: 0x0002, info: 0x0004 };
/** ReportEventW's strings are at most 31,839 characters each. */
const MAX_EVENT_TEXT = 31_000;

type ReportFn = (
  handle: unknown, type: number, category: number, id: number,
  sid: null, count: number, size: number, strings: string[], data: null,
) => boolean;

export class WindowsEventLog {
  private constructor(
    private handle: unknown,
    private readonly report: ReportFn,
    private readonly deregister: (handle: unknown) => boolean,
  ) {}

  /** Null when the Event Log cannot be opened here (never throws). */
  static async open(source = EVENT_SOURCE): Promise<WindowsEventLog | null> {
    try {
      const { default: koffi } = await import('koffi');
      const advapi32 = koffi.load('advapi32.dll');
      const register = advapi32.func('__stdcall', 'RegisterEventSourceW', 'void *', ['str16', 'str16']);
      const report = advapi32.func('__stdcall', 'ReportEventW', 'bool',
        ['void *', 'uint16', 'uint16', 'uint32', 'void *', 'uint16', 'uint32', 'str16 *', 'void *']);
      const deregister = advapi32.func('__stdcall', 'DeregisterEventSource', 'bool', ['void *']);
      const handle = register(null, source);
      if (!handle) return null;
      return new WindowsEventLog(handle, report as ReportFn, deregister as (handle: unknown) => boolean);
    } catch {
      return null;
    }
  }

  write(event: EventKind, text: string): void {
    if (this.handle === null) return;
    try {
      this.report(this.handle, EVENT_TYPE[event.level], 0, event.id, null, 1, 0, [text.slice(0, MAX_EVENT_TEXT)], null);
    } catch {
      // the Event Log is full or gone: the log file and console still have the line
    }
  }

  close(): void {
    if (this.handle === null) return;
    try {
      this.deregister(this.handle);
    } catch {
      // nothing left to release
    }
    this.handle = null;
  }
}
