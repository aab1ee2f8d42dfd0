/**
 * The text of each event `retroflect run` reports (platform/events.ts), and the engine's own happenings turned into
 * events: configuration changes, host repairs, captures. One place decides what an admin reads in the Event Log,
 * the journal and the log file.
 */
import { shieldKey, type InterceptConfig } from '../config/intercept-config.ts';
import { formatPortMap, portMapKey, portMapsOf } from '../config/port-maps.ts';
import type { CaptureSession } from '../capture/hub.ts';
import type { Engine } from '../engine/engine.ts';
import type { ChangeOrigin, EngineStatus, PipeClient } from '../engine/types.ts';
import { ErrorCode, isRetroflectError, type ExitCode } from '../errors.ts';
import { internalError } from '../error-messages.ts';
import { EngineEvent, type EventKind } from '../platform/events.ts';
import type { EngineLog } from './engine-log.ts';

const list = (items: string[]): string => (items.length ? items.join(', ') : 'none');

export function startedText(status: EngineStatus, pipePath: string): string {
  const facts = Object.entries(status.backendInfo).map(([k, v]) => `${k} ${v}`).join(', ');
  return [
    `retroflect ${status.version} started (pid ${status.pid}).`,
    `Backend: ${status.backend}${facts ? ` (${facts})` : ''}.`,
    `Reflect addresses: ${list(status.reflectAddresses)}.`,
    `Shield ports: ${list(status.shieldPorts.map(shieldKey))}.`,
    `Port maps: ${list(status.portMaps.map((m) => `${m.address} ${formatPortMap(m)}`))}.`,
    `Control pipe: ${pipePath}. Config file: ${status.configPath ?? 'none (changes are not persisted)'}.`,
  ].join(' ');
}

export function stoppedText(why: string, code: ExitCode): string {
  return `retroflect stopped: ${why}. Exit code ${code}.`;
}

const BACKEND_ERRORS = new Set<string>([ErrorCode.BACKEND_UNAVAILABLE, ErrorCode.BACKEND_FAILED]);
const REFUSAL_ERRORS = new Set<string>([
  ErrorCode.INVALID_ADDRESS,
  ErrorCode.INVALID_PORT,
  ErrorCode.PORT_MAP_CONFLICT,
]);

/** The event a failure to start or a backend failure is reported as, and its text with the hint. */
export function failureEvent(err: unknown, running: boolean): { kind: EventKind; text: string } {
  const e = isRetroflectError(err) ? err : internalError(err);
  const text = `${e.message}${e.hint ? ` ${e.hint}` : ''} [${e.code}]`;
  if (BACKEND_ERRORS.has(e.code)) return { kind: EngineEvent.BACKEND_FAILED, text };
  if (REFUSAL_ERRORS.has(e.code)) {
    return { kind: EngineEvent.REFUSED, text: `${running ? 'Refused' : 'Start refused'}: ${text}` };
  }
  return { kind: running ? EngineEvent.BACKEND_FAILED : EngineEvent.START_FAILED, text };
}

/** A control client as the log names it: what the operating system says, or that it does not say. */
function clientText(client: PipeClient | null): string {
  if (client === null) return 'client not known (the platform does not tell who is on the pipe)';
  const user = client.user === null ? `uid ${client.uid}` : `uid ${client.uid} (${client.user})`;
  return `client pid ${client.pid} (${client.process ?? 'process gone'}), ${user}`;
}

/** Who made a change, as the end of event 1100's sentence. */
function originText(origin: ChangeOrigin | undefined): string {
  if (origin === undefined) return 'through the control pipe';
  if (origin.kind === 'policy') return 'by the managed policy';
  if (origin.kind === 'config-file') return 'by an edit of the config file';
  return `through the control pipe by ${clientText(origin.client)}`;
}

/** What changed between two configs, and who asked, in words ("" when nothing changed). */
export function changeText(prev: InterceptConfig, next: InterceptConfig, origin?: ChangeOrigin): string {
  const parts: string[] = [];
  const diff = (what: string, a: string[], b: string[]): void => {
    const added = b.filter((x) => !a.includes(x));
    const removed = a.filter((x) => !b.includes(x));
    if (added.length) parts.push(`added ${what} ${added.join(', ')}`);
    if (removed.length) parts.push(`removed ${what} ${removed.join(', ')}`);
  };
  diff('reflect address', prev.reflectAddresses, next.reflectAddresses);
  diff('shield port', prev.shieldPorts.map(shieldKey), next.shieldPorts.map(shieldKey));
  const maps = (c: InterceptConfig): string[] => portMapsOf(c).map((m) => `${portMapKey(m)}->${m.target}`);
  diff('port map', maps(prev), maps(next));
  return parts.length ? `Configuration changed ${originText(origin)}: ${parts.join('; ')}.` : '';
}

function captureFilterText(session: CaptureSession): string {
  const f = session.opts.filter;
  const parts = [
    f.addresses.length ? `addresses ${f.addresses.join(', ')}` : '',
    f.ports.length ? `ports ${f.ports.join(', ')}` : '',
    f.verdicts.length ? `verdicts ${f.verdicts.join(', ')}` : '',
    f.protocols.length ? `protocols ${f.protocols.join(', ')}` : '',
  ].filter(Boolean);
  return parts.length ? parts.join('; ') : 'every packet';
}

/** Report what the running engine does by itself or at a client's request. */
export function watchEngineEvents(engine: Engine, log: EngineLog): void {
  engine.on('reconfigured', (prev: InterceptConfig, next: InterceptConfig, origin?: ChangeOrigin) => {
    const text = changeText(prev, next, origin);
    if (text) log.event(EngineEvent.CONFIG_CHANGED, text);
  });
  engine.on('hostRepaired', (what: string) => log.event(EngineEvent.HOST_REPAIRED, `Host state repaired: ${what}`));
  const captures = new Map<number, CaptureSession>();
  engine.on('captureStarted', (session: CaptureSession) => {
    captures.set(session.id, session);
    const what = `${captureFilterText(session)}; snaplen ${session.opts.snaplen}`;
    log.event(EngineEvent.CAPTURE_STARTED, `Capture ${session.id} started (${what}).`);
  });
  engine.on('captures', (ids: number[]) => {
    for (const [id, session] of captures) {
      if (ids.includes(id)) continue;
      captures.delete(id);
      const { captured, dropped } = session.counts();
      const counts = `${captured} packets delivered, ${dropped} dropped`;
      log.event(EngineEvent.CAPTURE_STOPPED, `Capture ${id} stopped: ${counts}.`);
    }
  });
}
