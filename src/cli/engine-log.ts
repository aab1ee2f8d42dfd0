/**
 * Where `retroflect run` tells what it does: each event of the catalogue (platform/events.ts) goes to the console,
 * the log file (`--log-file`) and, on Windows, the Event Log. Under systemd the console lines carry syslog priority
 * prefixes, so journald stores each with its level. No destination failing ever stops the engine.
 */
import { type EventKind, type EventLevel } from '../platform/events.ts';
import { underSystemd, withPriority } from '../platform/journal.ts';
import { LogFile } from '../platform/log-file.ts';
import type { WindowsEventLog } from '../platform/windows/event-log.ts';
import { printWarning } from './output.ts';

export interface EngineLogOptions {
  /** `--log-file`: append here, size capped and rotated. */
  logFile?: string;
  /** Cap of the log file in bytes (platform/log-file.ts). */
  logBytes?: number;
  /** Windows: write events to the Event Log too. */
  eventLog: boolean;
}

const LEVEL_WORD: Record<EventLevel, string> = { info: 'INFO', warning: 'WARNING', error: 'ERROR' };

export class EngineLog {
  private readonly journal = underSystemd();

  private constructor(
    private readonly file: LogFile | null,
    private readonly eventLog: WindowsEventLog | null,
  ) {}

  static async open(opts: EngineLogOptions): Promise<EngineLog> {
    const file = opts.logFile ? new LogFile(opts.logFile, opts.logBytes) : null;
    let eventLog: WindowsEventLog | null = null;
    if (opts.eventLog && process.platform === 'win32') {
      const { WindowsEventLog: EventLogClass } = await import('../platform/windows/event-log.ts');
      eventLog = await EventLogClass.open();
    }
    return new EngineLog(file, eventLog);
  }

  /**
   * An event of the catalogue. `console: false` when the console already showed the same failure (reportError);
   * under systemd it is still written there, as the journal's record with its priority.
   */
  event(kind: EventKind, text: string, opts: { console?: boolean } = {}): void {
    if (opts.console !== false || this.journal) this.toConsole(kind.level, `[${kind.id}] ${text}`);
    this.toFile(kind.level, `${kind.id} ${text}`);
    this.eventLog?.write(kind, text);
  }

  /** A line that is no event of the catalogue (a worker warning): console and log file. */
  note(level: EventLevel, text: string): void {
    this.toConsole(level, text);
    this.toFile(level, text);
  }

  close(): void {
    this.file?.close();
    this.eventLog?.close();
  }

  private toConsole(level: EventLevel, text: string): void {
    if (this.journal) {
      (level === 'info' ? process.stdout : process.stderr).write(withPriority(level, text) + '\n');
    } else if (level === 'info') {
      console.log(text);
    } else if (level === 'warning') {
      printWarning(text);
    } else {
      process.stderr.write(`error: ${text}\n`);
    }
  }

  private toFile(level: EventLevel, text: string): void {
    this.file?.write(`${new Date().toISOString()} ${LEVEL_WORD[level].padEnd(7)} ${text}`);
  }
}
