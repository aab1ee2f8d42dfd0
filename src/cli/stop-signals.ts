/**
 * The stop signals of `retroflect run`, watched from the first moment its code runs: main.ts starts watching before
 * it loads the rest of the CLI (loading the engine and its platform code takes a noticeable time, and until a
 * handler is installed a signal kills the process with the default action: exit 143, 130, ... instead of 0).
 * run-engine.ts then takes the same watcher, so a signal that arrived while loading stops the run before it touches
 * the host. This module imports nothing heavy, on purpose.
 */
import type { ExitCode } from '../errors.ts';

let watching: StopSignals | null = null;

/**
 * Signals that end the engine cleanly. SIGUSR1 starts Node's inspector and SIGPROF belongs to profilers, so they keep
 * their meaning; SIGKILL, SIGSTOP and the fault signals (SEGV, BUS, FPE, ILL, ABRT, TRAP, SYS) cannot be handled
 * usefully: what they leave behind (an nft table, a socket, temp files) is cleaned by the next start.
 */
export const STOP_SIGNALS: readonly NodeJS.Signals[] =
  process.platform === 'win32'
    ? ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK']
    : ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR2', 'SIGALRM', 'SIGVTALRM', 'SIGXCPU', 'SIGXFSZ', 'SIGPWR', 'SIGIO',
       'SIGSTKFLT'];

export interface StopSignals {
  /** The first signal received, or null. */
  readonly received: NodeJS.Signals | null;
  /** Resolves with the first signal. */
  readonly first: Promise<NodeJS.Signals>;
  /** After the last cleanup step: a later signal ends the process at once with `code` (nothing is left to undo). */
  finish(code: ExitCode): void;
}

/**
 * Installed before anything touches the host and kept until the last cleanup step, so a signal at any point in
 * between ends in a full cleanup. Handlers stay registered after the first signal: a second one (Ctrl+C pressed
 * twice, a service manager repeating SIGTERM) is ignored instead of killing the process halfway through cleanup.
 * After cleanup, a signal ends the process at once with the run's exit code (never a signal death: 143, 131...).
 */
export function watchStopSignals(): StopSignals {
  if (watching) return watching;
  let received: NodeJS.Signals | null = null;
  let resolveFirst!: (sig: NodeJS.Signals) => void;
  const first = new Promise<NodeJS.Signals>((resolve) => (resolveFirst = resolve));
  let finalCode: ExitCode | null = null;
  const handler = (sig: NodeJS.Signals): void => {
    if (finalCode !== null) process.exit(finalCode);
    if (received !== null) return;
    received = sig;
    resolveFirst(sig);
  };
    for (const sig of STOP_SIGNALS) {
    try {
      process.on(sig, handler);
    } catch {
      /* a signal this platform does not have */
    }
  }
  watching = {
    get received() {
      return received;
    },
    first,
    finish: (code) => {
      finalCode = code;
    },
  };
  return watching;
}
