/**
 * tshark for tests that read back the pcapng files we write, with a HOME of its own: tshark reads (and may create)
 * its profile under HOME, which an unprivileged user may not have (nobody's HOME is /nonexistent), so the unit tier
 * runs it the same as any user and never touches the caller's own profile.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type RunResult } from './netns.ts';

let home: string | undefined;

/** Runs `tshark args` (no shell); never rejects on a non-zero exit. */
export function tshark(args: string[]): Promise<RunResult> {
  if (!home) {
    const dir = mkdtempSync(join(tmpdir(), 'rft-tshark-home-'));
    home = dir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return run('tshark', args, { env: { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, '.config') } });
}
