/**
 * Starts the real `retroflect run` (the CLI from source, through tsx) inside a namespace and waits until it says
 * it is reflecting. Shared by test/e2e/run.test.ts and bench/reflect-path.ts.
 */
import type { ChildProcess } from 'node:child_process';
import type { NetNs } from '../helpers/netns.ts';

/** The line `retroflect run` prints once routes and rules are in place (src/cli/run-output.ts printRunBanner). */
export const READY_LINE = /Reflection in progress/;

export interface EngineProcess {
  child: ChildProcess;
  /** Everything printed so far (stdout + stderr), for assertions and failure messages. */
  output(): string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
}

export function spawnEngine(ns: NetNs, args: string[]): EngineProcess {
  const child = ns.spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'run', ...args], { env: { ...process.env, NO_COLOR: '1' } });
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (out += d));
  child.stderr!.on('data', (d: string) => (out += d));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return { child, output: () => out, exited };
}

/** Wait for the ready line; reject with the output if the process exits first or the time runs out. */
export async function waitReady(e: EngineProcess, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let exited: number | string | null = null;
  void e.exited.then((c) => (exited = c));
  while (!READY_LINE.test(e.output())) {
    if (exited !== null) throw new Error(`retroflect run exited (${exited}) before it was ready:\n${e.output()}`);
    if (Date.now() > end) throw new Error(`retroflect run not ready after ${timeoutMs} ms:\n${e.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
