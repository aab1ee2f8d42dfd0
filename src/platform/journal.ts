/**
 * Linux: is our stdout/stderr the systemd journal? Then every line we mean as an event starts with its syslog
 * priority (`<3>` error, `<4>` warning, `<6>` info; sd-daemon(3)), which journald strips and stores as PRIORITY, so
 * `journalctl -u retroflect -p warning` finds them. systemd sets JOURNAL_STREAM when stdout or stderr is connected
 * to the journal, and INVOCATION_ID for every process it starts as a unit.
 */
import { SYSLOG_PRIORITY, type EventLevel } from './events.ts';

export function underSystemd(env: NodeJS.ProcessEnv = process.env, platform = process.platform): boolean {
  return platform === 'linux' && Boolean(env.JOURNAL_STREAM || env.INVOCATION_ID);
}

/** The line as journald should read it: each line of a multi-line text gets the prefix (journald splits on \n). */
export function withPriority(level: EventLevel, text: string): string {
  const prefix = `<${SYSLOG_PRIORITY[level]}>`;
  return text.split('\n').map((line) => prefix + line).join('\n');
}
