/**
 * What every client command shares: the common options (--pipe, --json), connecting, calling one method, printing
 * the result (a table or --json) and errors with their exit code; and how port maps read in a table.
 */
import type { Command } from 'commander';
import { ControlClient } from '../control/client.ts';
import type { MethodName, MethodResults } from '../control/protocol.ts';
import { formatPortMap, type PortMap, type PortMapSpec } from '../config/port-maps.ts';
import { ExitCode } from '../errors.ts';
import { printJson, reportError } from './output.ts';

export interface CommonOptions {
  pipe?: string;
  json?: boolean;
}

/** "80=8080/tcp, 80=8080/udp" shown as "80=8080" when both protocols share it. */
export function mapsText(maps: readonly PortMapSpec[]): string {
  const out: string[] = [];
  for (const m of maps) {
    const other = maps.find((x) => x !== m && x.port === m.port && x.target === m.target);
    if (other && m.protocol === 'udp') continue;
    out.push(other ? `${m.port}=${m.target}` : formatPortMap(m));
  }
  return out.join(', ');
}

export function mapsByAddress(maps: readonly PortMap[]): string {
  const addrs = [...new Set(maps.map((m) => m.address))];
  return addrs.map((a) => `${a} ${mapsText(maps.filter((m) => m.address === a))}`).join('; ');
}

export function withCommon(cmd: Command): Command {
  return cmd
    .option('-p, --pipe <name>', 'control pipe name (Linux: or socket path); default: retroflect')
    .option('--json', 'print the result as JSON (stable, for scripts)');
}

/** Connect, run `fn`, print errors, set the exit code. Never throws. */
export async function withClient(opts: CommonOptions, fn: (client: ControlClient) => Promise<void>): Promise<void> {
  let client: ControlClient | null = null;
  try {
    client = await ControlClient.connect({ pipe: opts.pipe });
    await fn(client);
    process.exitCode = ExitCode.OK;
  } catch (err) {
    process.exitCode = reportError(err, opts.json === true);
  } finally {
    client?.close();
  }
}

export async function callAndPrint<M extends MethodName>(
  opts: CommonOptions,
  method: M,
  params: Record<string, unknown>,
  human: (result: MethodResults[M]) => void,
): Promise<void> {
  await withClient(opts, async (client) => {
    const result = await client.call(method, params);
    if (opts.json) printJson(result);
    else human(result);
  });
}

