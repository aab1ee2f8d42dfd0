/**
 * A stop signal while `retroflect run` is still loading (issue 19, item 16): the run must end with exit 0 and leave
 * nothing behind, as README promises for SIGTERM/SIGINT, however early the signal comes. Loading the engine and its
 * platform code takes a noticeable time, and until a handler is installed a signal kills the process with the
 * default action (exit 143/130). Rather than guess that moment by timing, a module hook
 * (test/fixtures/hold-engine-load.mjs) holds the loading of the engine's module for 1.5 s and says when the hold
 * begins; the signal comes 0 to 1,000 ms into it.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createTopology, type Topology } from '../helpers/netns.ts';
import { engineLeftovers, privateDir, removeDir } from '../helpers/engine.ts';

/** Printed to stderr by the hook when it starts holding the engine's module. */
const HELD = 'engine-load-held';
const OFFSETS_MS = [0, 100, 500, 1000];

let t: Topology;
let dir: string;
before(async () => {
  t = await createTopology('esig');
  dir = privateDir('esig');
});
after(async () => {
  await t?.destroy();
  removeDir(dir);
});

for (const [i, offset] of OFFSETS_MS.entries()) {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    test(`${sig} ${offset} ms into the loading of the engine: exit 0, nothing left behind`, { timeout: 90_000 }, async () => {
      const pipe = join(dir, `e${i}-${sig}.sock`);
      const child = t.a.spawn(process.execPath, [
        '--import', 'tsx', '--import', './test/fixtures/hold-engine-load.mjs',
        'src/cli/main.ts', 'run', '--no-config', '--reflect', '192.0.2.1', '--shield', '8080/tcp', '--pipe', pipe,
      ], { env: { ...process.env, NO_COLOR: '1', RFT_HOLD_ENGINE_LOAD_MS: '1500' } });
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      const exited = new Promise<number | string>((resolve) => {
        child.once('exit', (code, s) => resolve(code ?? s ?? -1));
      });
      await new Promise<void>((resolve) => {
        child.stderr!.on('data', (d) => {
          out += d;
          if (out.includes(HELD)) resolve();
        });
      });
      await new Promise((r) => setTimeout(r, offset));
      child.kill(sig);
      assert.equal(await exited, 0, out);
      assert.match(out, new RegExp(`Stopping \\(${sig}\\)`));
      assert.deepEqual(await engineLeftovers(t.a, pipe), [], out);
    });
  }
}
