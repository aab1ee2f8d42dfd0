#!/usr/bin/env node
/**
 * The `retroflect` command's entry point. `run` watches the stop signals first (stop-signals.ts), and only then is the
 * rest of the CLI loaded: loading takes a noticeable time, and a stop signal meanwhile must still end in a clean exit 0.
 */
import { watchStopSignals } from './stop-signals.ts';

if (process.argv[2] === 'run') watchStopSignals();
void import('./program.ts').then((cli) => cli.runCli(process.argv));
