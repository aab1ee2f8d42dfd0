/**
 * Start the real `retroflect run` (the CLI from source through tsx, or a bundle: see CLI below) inside a namespace, on a control socket in a
 * private directory, and drive it with the real CLI. Used by test/control/live.test.ts, fuzz.test.ts and
 * bench/control-plane.ts.
 *
 * The control socket lives on the filesystem, which network namespaces do not isolate, so every engine gets its own
 * mkdtemp directory (mode 0700, as the server demands) for its socket and config file — never /run/retroflect or
 * /etc/retroflect.
 */
import { type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetNs } from './netns.ts';
import { DEFAULT_DEVICE } from '../../src/packet-sources/default-device.ts';

const node = process.execPath;
/**
 * How to start the CLI: from source through tsx (default), or a built bundle when RETROFLECT_TEST_ENGINE names one
 * (e.g. dist/retroflect.cjs after `npm run build`), so the same tests check the shipped artefact.
 */
const CLI: string[] = process.env.RETROFLECT_TEST_ENGINE ? [process.env.RETROFLECT_TEST_ENGINE] : ['--import', 'tsx', 'src/cli/main.ts'];

/** `retroflect run` prints this at the start of a stdout line once its pipe answers (src/cli/run-engine.ts). */
export const READY = /^Ready\./m;

/**
 * The device an engine makes when no --device is given, by backend (the TUN device, or the ebpf backend's veth; its
 * peer adds a "p"). Without --backend the engine runs ebpf on these test hosts.
 */
export function engineDevice(backend: 'ebpf' | 'tun' = 'ebpf'): string {
  return DEFAULT_DEVICE[backend];
}

/** What an engine can leave in its namespace and directory: 'device', 'qdisc', 'nft table', 'socket' ([]: nothing). */
export async function engineLeftovers(ns: NetNs, pipe: string): Promise<string[]> {
  const left: string[] = [];
  const links = await ns.ipJson<{ ifname: string }[]>(['link', 'show']);
  if (links.some((l) => Object.values(DEFAULT_DEVICE).some((d) => l.ifname.startsWith(d)))) left.push('device');
  if ((await ns.must('tc', ['qdisc', 'show'])).includes('clsact')) left.push('qdisc');
  if ((await ns.must('nft', ['list', 'tables'])).includes('retroflect')) left.push('nft table');
  if (existsSync(pipe)) left.push('socket');
  return left;
}

/** A private 0700 directory for sockets and config files; remove it with rmSync(dir, {recursive, force}). */
export function privateDir(tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `rft-${tag}-`));
  chmodSync(dir, 0o700);
  return dir;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, or undefined when it is not JSON. */
  json: any;
}

/** Run any `retroflect` command inside `ns` (no shell), with colours off. */
export async function retroflect(ns: NetNs, args: string[], timeoutMs = 30_000): Promise<CliResult> {
  const r = await ns.run('env', ['NO_COLOR=1', node, ...CLI, ...args], { timeoutMs });
  let json: unknown;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { ...r, json };
}

export interface EngineHandle {
  child: ChildProcess;
  pipe: string;
  /** Everything printed so far, stdout and stderr, for failure messages. */
  output(): string;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
  /** True until the process has exited. */
  alive(): boolean;
  /** A client command against this engine's pipe with --json. */
  cli(args: string[]): Promise<CliResult>;
  /** SIGKILL if still running and wait for the exit (for `after` hooks). */
  kill(): Promise<void>;
}

export interface StartOptions {
  /** Socket path (default `<dir>/engine.sock`). */
  pipe?: string;
  /** Config file path, or false for --no-config. */
  config: string | false;
  /** Extra `run` arguments (--reflect ..., --shield ..., --device ...). */
  args?: string[];
  timeoutMs?: number;
  /** Extra environment for the engine process (e.g. PATH with wrapped helpers, RETROFLECT_HELPER_TIMEOUT_MS). */
  env?: Record<string, string>;
  /** stdout/stderr of the engine: 'pipe' (default, collected by output()) or an fd (e.g. /dev/full). */
  stdout?: 'pipe' | number;
  stderr?: 'pipe' | number;
  /** A command the engine is started through, in the namespace (e.g. a shell that mounts something first). */
  prefix?: string[];
}

/** Spawn `retroflect run` in `ns`; does not wait. */
export function spawnEngine(ns: NetNs, dir: string, opts: StartOptions): EngineHandle {
  const pipe = opts.pipe ?? join(dir, 'engine.sock');
  const cfgArgs = opts.config === false ? ['--no-config'] : ['--config', opts.config];
  const command = [...(opts.prefix ?? []), node, ...CLI, 'run', '--pipe', pipe, ...cfgArgs, ...(opts.args ?? [])];
  const child = ns.spawn(command[0], command.slice(1), {
    env: { ...process.env, NO_COLOR: '1', ...opts.env },
    stdio: ['pipe', opts.stdout ?? 'pipe', opts.stderr ?? 'pipe'],
  });
  let out = '';
  let running = true;
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => (out += d));
  child.stderr?.on('data', (d: string) => (out += d));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      running = false;
      resolve(code ?? signal ?? -1);
    }),
  );
  return {
    child,
    pipe,
    output: () => out,
    exited,
    alive: () => running,
    cli: (args) => retroflect(ns, [...args, '--pipe', pipe, '--json']),
    kill: async () => {
      if (!running) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** How long an engine may take to say `Ready.` by default: a start loads the CLI through tsx and the ebpf program
 *  through the verifier, which takes tens of seconds on a shared machine under load; a hung start still fails. */
const ENGINE_READY_TIMEOUT_MS = 60_000;

/** Spawn `retroflect run` in `ns` and wait for its `Ready.` line; rejects with its output if it exits first. */
export async function startEngine(ns: NetNs, dir: string, opts: StartOptions): Promise<EngineHandle> {
  const e = spawnEngine(ns, dir, opts);
  const timeoutMs = opts.timeoutMs ?? ENGINE_READY_TIMEOUT_MS;
  const end = Date.now() + timeoutMs;
  while (!READY.test(e.output())) {
    if (!e.alive()) throw new Error(`retroflect run exited (${await e.exited}) before it was ready:\n${e.output()}`);
    if (Date.now() > end) {
      await e.kill();
      throw new Error(`retroflect run not ready after ${timeoutMs} ms:\n${e.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return e;
}

/** Remove a private directory made by privateDir. */
export function removeDir(dir: string | undefined): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
}
