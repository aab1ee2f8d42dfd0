/**
 * What an admin downloads and waits for: the size of each executable and release archive (aim: executables under
 * 100 MB), and the time from `retroflect run` (the packaged Linux executable, in a network namespace) to a control
 * pipe that answers `status` (aim: under 1 s). Start-up is measured over several fresh starts; the median and the
 * worst are reported. Needs `npm run build -- --windows` first; packages into a temporary folder.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlClient } from '../src/control/client.ts';
import { createTopology } from '../test/helpers/netns.ts';
import { privateDir, removeDir } from '../test/helpers/engine.ts';
import type { BenchResult } from './types.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const STARTS = 7;
const MB = 1024 * 1024;

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (const exe of ['retroflect', 'retroflect.exe']) {
    const p = join(ROOT, 'dist', exe);
    if (!existsSync(p)) throw new Error(`${p} is missing: run npm run build -- --windows first`);
    results.push({ name: `${exe} size`, value: statSync(p).size / MB, unit: 'MB', note: 'aim: under 100 MB' });
  }
  const out = mkdtempSync(join(tmpdir(), 'rft-bench-pkg-'));
  try {
    const pkg = spawnSync(
      process.execPath,
      [join(ROOT, 'scripts', 'package.mjs'), '--no-build', '--out-dir', out],
      { encoding: 'utf8' },
    );
    if (pkg.status !== 0) throw new Error(`package.mjs failed: ${pkg.stderr}`);
    for (const f of readdirSync(out).filter((n) => /\.(zip|tar\.gz)$/.test(n))) {
      results.push({
        name: `${f.replace(/^retroflect-[^-]+-/, '')} archive size`,
        value: statSync(join(out, f)).size / MB,
        unit: 'MB',
      });
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }

  const topo = await createTopology('bench-rel');
  const dir = privateDir('bench-rel');
  try {
    const times: number[] = [];
    for (let i = 0; i < STARTS; i++) {
      const pipe = join(dir, `e${i}.sock`);
      const t0 = process.hrtime.bigint();
      const child = topo.a.spawn(
        join(ROOT, 'dist', 'retroflect'),
        ['run', '--no-config', '--reflect', '192.0.2.1', '--pipe', pipe],
      );
      let answered = false;
      while (!answered) {
        if (child.exitCode !== null) throw new Error(`retroflect run exited with ${child.exitCode}`);
        try {
          const client = await ControlClient.connect({ pipe });
          await client.call('status');
          client.close();
          answered = true;
        } catch {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    times.sort((a, b) => a - b);
    results.push({
      name: 'run → pipe answers (median)',
      value: times[Math.floor(times.length / 2)]!,
      unit: 'ms',
      note: `${STARTS} fresh starts of dist/retroflect in a namespace; aim: under 1000 ms`,
    });
    results.push({ name: 'run → pipe answers (worst)', value: times[times.length - 1]!, unit: 'ms' });
  } finally {
    await topo.destroy();
    removeDir(dir);
  }
  return results;
}
