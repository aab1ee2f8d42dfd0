/**
 * `retroflect capture` (pcapng to a file or stdout) and `retroflect trace` (one line or JSON object per packet):
 * both open a capture on the running engine (docs/protocol.md, "Capture") and end on --count, --duration, Ctrl+C,
 * or when the engine stops.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { ControlClient } from '../control/client.ts';
import type { CaptureEndParams } from '../control/protocol.ts';
import { CAPTURE_PROTOCOLS, DEFAULT_SNAPLEN, MAX_SNAPLEN } from '../capture/filter.ts';
import { BT_EPB } from '../capture/pcapng.ts';
import { CAPTURE_VERDICT_NAMES } from '../packet/verdicts.ts';
import { endpointsText, type PacketSummary } from '../capture/summary.ts';
import { ErrorCode, ExitCode, RetroflectError } from '../errors.ts';
import chalk from 'chalk';
import { CaptureOutput } from './capture-output.ts';
import { outputFailed, printJson, reportError, watchStdoutReader, whenOutputFails } from './output.ts';

interface CaptureCliOptions {
  pipe?: string;
  json?: boolean;
  count?: number;
  duration?: number;
  address?: string[];
  port?: number[];
  verdict?: string[];
  protocol?: string[];
  snaplen?: number;
}

/** "30s", "2m", "1h", "500ms" or plain seconds → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`'${text}' is not a duration (e.g. 30s, 2m, 500ms).`);
  const n = Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const)[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  if (!(n > 0) || n > 2 ** 31 - 1) throw new InvalidArgumentError(`'${text}' is not a usable duration.`);
  return n;
}

function positiveInt(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`'${text}' is not a positive integer.`);
  return n;
}

function snaplen(text: string): number {
  if (text === 'full' || text === '0') return MAX_SNAPLEN;
  return positiveInt(text);
}

function collect<T>(parse: (s: string) => T) {
  return (value: string, prev: T[] | undefined): T[] => [...(prev ?? []), ...value.split(',').filter(Boolean).map(parse)];
}

function withCaptureOptions(cmd: Command): Command {
  return cmd
    .option('-p, --pipe <name>', 'control pipe name (Linux: or socket path); default: retroflect')
    .option('-c, --count <n>', 'stop after n packets', positiveInt)
    .option('-d, --duration <time>', 'stop after this long (30s, 2m, 500ms)', parseDuration)
    .option('-a, --address <address...>', 'only packets to or from these addresses (reflect addresses or peers)', collect(String))
    .option('--port <port...>', 'only TCP/UDP packets with this source or destination port', collect(positiveInt))
    .addOption(new Option('--verdict <verdict...>', 'only packets with these verdicts').choices([...CAPTURE_VERDICT_NAMES]))
    .addOption(new Option('--protocol <protocol...>', 'only these protocols').choices([...CAPTURE_PROTOCOLS]));
}

function filterParams(o: CaptureCliOptions): Record<string, unknown> {
  return {
    ...(o.address?.length ? { addresses: o.address } : {}),
    ...(o.port?.length ? { ports: o.port } : {}),
    ...(o.verdict?.length ? { verdicts: o.verdict } : {}),
    ...(o.protocol?.length ? { protocols: o.protocol } : {}),
  };
}

/** What ends a capture from this side: --duration, Ctrl+C / SIGTERM, or `end()` (--count reached, output failed). */
interface CaptureStop {
  readonly ended: Promise<void>;
  end(): void;
  /** Remove the timer and signal handlers. */
  dispose(): void;
}

/** Armed before anything else, so --duration ends the command whatever it waits for (an engine, a FIFO's reader). */
function captureStop(durationMs: number | undefined): CaptureStop {
  let end!: () => void;
  const ended = new Promise<void>((resolve) => (end = resolve));
  const timer = durationMs ? setTimeout(end, durationMs) : null;
  const onSignal = (): void => end();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    ended,
    end,
    dispose: () => {
      if (timer) clearTimeout(timer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/**
 * Run one capture until `stop` ends it or the engine ends it. `onData` gets each notification's params; returning
 * `false` from `wantMore` ends the capture.
 */
async function runCapture(
  o: CaptureCliOptions,
  params: Record<string, unknown>,
  onData: (p: Record<string, unknown>) => void,
  wantMore: () => boolean,
  stop: CaptureStop,
): Promise<CaptureEndParams | null> {
  const client = await ControlClient.connect({ pipe: o.pipe, clientName: 'retroflect-capture' });
  try {
    let endNotice: CaptureEndParams | null = null;
    let started = false;
    const early: Record<string, unknown>[] = [];
    client.onNotification((n) => {
      if (n.method === 'capture') {
        if (!started) early.push(n.params as Record<string, unknown>);
        else onData(n.params as Record<string, unknown>);
        if (!wantMore()) stop.end();
      } else if (n.method === 'capture.end') {
        endNotice = n.params as CaptureEndParams;
        stop.end();
      }
    });
    await client.call('capture.start', params);
    started = true;
    for (const p of early.splice(0)) onData(p);
    if (!wantMore()) stop.end();
    let connectionLost = false;
    await Promise.race([stop.ended, client.closed().then(() => (connectionLost = true))]);
    if (endNotice) return endNotice;
    if (connectionLost) {
      // No capture.end: the engine closed the connection (it stopped hard, or this client fell too far behind).
      throw new RetroflectError(ErrorCode.ENGINE_NOT_RUNNING, 'The engine closed the capture connection; what arrived until then was kept.', {
        hint: 'If the engine is still running, this client read too slowly: narrow the filter or lower --snaplen.',
      });
    }
    return await client.call('capture.stop', {}); // the rest of the packets arrive before this reply
  } finally {
    client.close();
  }
}

/**
 * The blocks of a pcapng byte stream to write: every block but packet blocks (EPB) always (interface blocks must stay,
 * or later packets would name interfaces the file lacks), packet blocks up to `room` of them, and none at all when
 * `keepPackets` is false (the output is behind: they are counted as `skipped` instead).
 */
export function selectBlocks(data: Buffer, room: number, keepPackets: boolean): { bytes: Buffer; packets: number; skipped: number } {
  const parts: Buffer[] = [];
  let pos = 0;
  let packets = 0;
  let skipped = 0;
  while (pos + 12 <= data.length) {
    const type = data.readUInt32LE(pos);
    const len = data.readUInt32LE(pos + 4);
    if (len < 12 || pos + len > data.length) break;
    if (type === BT_EPB) {
      if (packets >= room) break;
      if (!keepPackets) {
        skipped++;
        pos += len;
        continue;
      }
      packets++;
    }
    parts.push(data.subarray(pos, pos + len));
    pos += len;
  }
  return { bytes: Buffer.concat(parts), packets, skipped };
}

function verdictColour(v: string): (s: string) => string {
  switch (v) {
    case 'reflected':
      return chalk.green;
    case 'passed':
      return chalk.dim;
    case 'shieldDropped':
      return chalk.yellow;
    default:
      return chalk.red;
  }
}

export function traceLine(s: PacketSummary): string {
  const time = s.time.slice(11, 26);
  const verdict = verdictColour(s.verdict)((s.malformedReason ? `${s.verdict}(${s.malformedReason})` : s.verdict).padEnd(13));
  const proto = (s.protocol ?? '?').padEnd(6);
  const before = endpointsText(s.before);
  const after = s.after.source === null ? chalk.dim('(not sent)') : s.verdict === 'reflected' ? endpointsText(s.after) : chalk.dim('(unchanged)');
  const dir = s.direction === 'outbound' ? 'out' : 'in ';
  const flags = s.tcpFlags ? ` [${s.tcpFlags}]` : s.icmpType !== null ? ` type ${s.icmpType}` : '';
  return `${chalk.dim(time)} ${dir} ${s.interface} ${verdict} ${proto} ${before} → ${after} ${s.length} B${flags}`;
}

export function registerCaptureCommands(program: Command): void {
  withCaptureOptions(
    program
      .command('capture')
      .description('Capture packets the engine sees into a pcapng file (Wireshark, tshark); -w - streams to stdout.')
      .requiredOption('-w, --write <file>', "pcapng file to write ('-' = stdout)"),
  )
    .option('-s, --snaplen <n>', `bytes kept per packet (${DEFAULT_SNAPLEN}; 'full' or 0 = whole packets)`, snaplen)
    .option('--json', 'print the closing summary as JSON (stderr stays quiet)')
    .action(async (o: CaptureCliOptions & { write: string }) => {
      const toStdout = o.write === '-';
      const stop = captureStop(o.duration);
      const unwatch = toStdout ? watchStdoutReader() : () => undefined;
      try {
        const out = toStdout ? CaptureOutput.stdout() : await CaptureOutput.open(o.write, stop.ended);
        void out.whenFailed().then(() => stop.end()); // full disk, reader gone: stop capturing
        let written = 0;
        let skipped = 0;
        const end = await runCapture(
          o,
          { format: 'pcapng', snaplen: o.snaplen ?? DEFAULT_SNAPLEN, ...filterParams(o) },
          (p) => {
            const data = Buffer.from(String(p.data), 'base64');
            const room = o.count === undefined ? Number.MAX_SAFE_INTEGER : o.count - written;
            const chosen = selectBlocks(data, room, out.ready());
            written += chosen.packets;
            skipped += chosen.skipped;
            out.write(chosen.bytes);
          },
          () => out.failure === null && (o.count === undefined || written < o.count),
          stop,
        );
        await out.close(); // throws E_OUTPUT_FAILED (exit 11) when the output failed at any point
        const summary = { file: toStdout ? null : o.write, packets: written, dropped: (end?.dropped ?? 0) + skipped };
        if (o.json && !toStdout) printJson(summary);
        else process.stderr.write(`${chalk.green('✔')} ${written} packets captured${toStdout ? '' : ` to ${o.write}`}${summary.dropped ? chalk.yellow(`, ${summary.dropped} dropped (the capture could not keep up)`) : ''}.\n`);
        process.exitCode = ExitCode.OK;
      } catch (err) {
        process.exitCode = reportError(err, o.json === true && !toStdout);
      } finally {
        unwatch();
        stop.dispose();
      }
    });

  withCaptureOptions(program.command('trace').description('Show each packet the engine sees: verdict, protocol, addresses before → after, length, TCP flags.'))
    .option('-s, --snaplen <n>', 'bytes of each packet the engine copies (headers need 64-128)', snaplen)
    .option('--json', 'one JSON object per packet and line (for scripts)')
    .action(async (o: CaptureCliOptions) => {
      let shown = 0;
      const stop = captureStop(o.duration);
      // A reader that went away (`trace | head`, a closed terminal) ends the trace: exit 11, and the engine's capture
      // slot is freed, also when no packet comes to write (watchStdoutReader).
      void whenOutputFails().then(() => stop.end());
      const unwatch = watchStdoutReader();
      try {
        const end = await runCapture(
          o,
          { format: 'summary', snaplen: o.snaplen ?? 128, ...filterParams(o) },
          (p) => {
            for (const s of p.packets as PacketSummary[]) {
              if (o.count !== undefined && shown >= o.count) break;
              shown++;
              process.stdout.write((o.json ? JSON.stringify(s) : traceLine(s)) + '\n');
            }
          },
          () => !outputFailed() && (o.count === undefined || shown < o.count),
          stop,
        );
        if (!o.json && end?.dropped) process.stderr.write(chalk.yellow(`${end.dropped} packets were dropped (the trace could not keep up).\n`));
        process.exitCode = ExitCode.OK;
      } catch (err) {
        process.exitCode = reportError(err, o.json === true);
      } finally {
        unwatch();
        stop.dispose();
      }
    });
}
