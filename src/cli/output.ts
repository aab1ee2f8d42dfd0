/**
 * Console output shared by every command: tables (`table`), colour (`chalk`, off when NO_COLOR is set or stdout is
 * not a terminal — chalk's own detection), byte/rate formatting, and error printing with exit codes.
 * Scripts use `--json`: stdout then carries exactly one JSON document (or one per line for streams).
 */
import chalk from 'chalk';
import { table, getBorderCharacters } from 'table';
import { internalError } from '../error-messages.ts';
import { ExitCode, isRetroflectError } from '../errors.ts';
import { peerGone } from '../platform/linux/peer-gone.ts';

// NO_COLOR (https://no-color.org): any non-empty value turns colour off.
if (process.env.NO_COLOR) chalk.level = 0;


let outputBroken = false;
const onBroken: (() => void)[] = [];

function markBroken(): void {
  if (outputBroken) return;
  outputBroken = true;
  for (const f of onBroken.splice(0)) f();
}

/**
 * Output must never be what kills us: `retroflect run` under a service or scheduled task whose log pipe closes, or
 * `retroflect stats | head -1`, `status >/dev/full`. A write to a closed pipe fails asynchronously (EPIPE as an
 * 'error' event, fatal when nobody listens); a write to a file or character device fails synchronously (ENOSPC thrown
 * from write()). Every writer (console.log, commander, our own helpers) ends in `stream.write`, so this wraps that
 * once: the first failure marks the output broken and every later write is dropped. Called first thing by main().
 */
export function guardOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
    const guarded = (...args: unknown[]): boolean => {
      if (outputBroken) {
        const cb = args.find((a) => typeof a === 'function') as ((err?: Error) => void) | undefined;
        cb?.();
        return true;
      }
      try {
        return write(...args);
      } catch {
        markBroken();
        return true;
      }
    };
    stream.write = guarded as typeof stream.write;
    stream.on('error', markBroken);
  }
}

/** True once a write to stdout or stderr failed (EPIPE, ENOSPC, EIO...). */
export function outputFailed(): boolean {
  return outputBroken;
}

/** Resolves when output first fails (ends `stats --watch` whose reader went away). */
export function whenOutputFails(): Promise<void> {
  return outputBroken ? Promise.resolve() : new Promise((resolve) => onBroken.push(resolve));
}

/** How often `watchStdoutReader` asks whether stdout still has a reader. */
const READER_CHECK_MS = 500;

/**
 * Linux: mark the output broken as soon as the reader of stdout (a pipe, a socket, a terminal) goes away, even when
 * nothing is being written. A write would find out too, but a `trace` that sees no packet writes nothing, so it would
 * keep running and keep its capture slot for ever. Returns the function that stops watching. (Windows: no such
 * check without a write; the next write finds out.)
 */
export function watchStdoutReader(): () => void {
  if (process.platform !== 'linux') return () => undefined;
  const timer = setInterval(() => {
    if (!outputBroken && peerGone(1)) markBroken();
  }, READER_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** A table with a bold header row; empty → a dim "(none)". */
export function renderTable(header: string[], rows: (string | number)[][], emptyText = '(none)'): string {
  if (rows.length === 0) return chalk.dim(emptyText) + '\n';
  return table([header.map((h) => chalk.bold(h)), ...rows.map((r) => r.map(String))], {
    border: getBorderCharacters('norc'),
    drawHorizontalLine: (i, size) => i === 0 || i === 1 || i === size,
  });
}

/** "key: value" lines with aligned keys. */
export function renderKeyValues(pairs: [string, string | number][]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${chalk.dim((k + ':').padEnd(width + 1))} ${v}`).join('\n') + '\n';
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  let v = n;
  let i = 0;
  while (v >= 1024 && i < BYTE_UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${BYTE_UNITS[i]}`;
}

export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatDuration(seconds: number): string {
  const s = Math.floor(seconds % 60);
  const m = Math.floor(seconds / 60) % 60;
  const h = Math.floor(seconds / 3600) % 24;
  const d = Math.floor(seconds / 86400);
  return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m ${s}s` : m ? `${m}m ${s}s` : `${s}s`;
}

/** Stable JSON for scripts: one document, two-space indent, trailing newline. */
export function printJson(value: unknown, compact = false): void {
  process.stdout.write(JSON.stringify(value, null, compact ? undefined : 2) + '\n');
}

export function printSuccess(message: string): void {
  process.stdout.write(`${chalk.green('✔')} ${message}\n`);
}

export function printWarning(message: string): void {
  process.stderr.write(`${chalk.yellow('warning:')} ${message}\n`);
}

/**
 * Report a failure and return the exit code to end with. With `json`, stdout gets `{"error": {...}}` so a script
 * parsing stdout always gets a document; otherwise the message and hint go to stderr.
 */
export function reportError(err: unknown, json: boolean): ExitCode {
  const e = isRetroflectError(err) ? err : internalError(err);
  if (json) {
    printJson({ error: e.toJSON() });
  } else {
    process.stderr.write(`${chalk.red('error:')} ${e.message}${chalk.dim(` [${e.code}]`)}\n`);
    if (e.hint) process.stderr.write(`${chalk.dim('hint:')} ${e.hint}\n`);
  }
  return e.exitCode;
}
