/**
 * A stop signal while `retroflect run` is still loading (issue 19, item 16): the run must end with exit 0 and leave
 * nothing behind, as README promises for SIGTERM/SIGINT, however early the signal comes. Loading the engine and its
 * platform code takes a noticeable time; until a handler is installed a signal kills the process with the default
 * action (exit 143). The engine runs from source here; a marker module imported right before the CLI's entry point
 * says when Node starts on our code, and the signal follows at several offsets after it, from the CLI's first
 * moments to a running engine.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createTopology, type Topology } from '../helpers/netns.ts';
import { engineLeftovers, privateDir, removeDir } from '../helpers/engine.ts';

/** Printed to stderr by a module Node imports just before src/cli/main.ts. */
const MARKER = 'entry-starts';
const OFFSETS_MS = [50, 100, 200, 400, 800, 1600];

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
    test(`${sig} ${offset} ms after the CLI starts: exit 0, nothing left behind`, { timeout: 90_000 }, async () => {
      const pipe = join(dir, `e${i}-${sig}.sock`);
      const child = t.a.spawn(process.execPath, [
        '--import', 'tsx',
        '--import', `data:text/javascript,process.stderr.write(${JSON.stringify(MARKER + '\n')})`,
        'src/cli/main.ts', 'run', '--no-config', '--reflect', '192.0.2.1', '--shield', '8080/tcp', '--pipe', pipe,
      ], { env: { ...process.env, NO_COLOR: '1' } });
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      const exited = new Promise<number | string>((resolve) => {
        child.once('exit', (code, s) => resolve(code ?? s ?? -1));
      });
      await new Promise<void>((resolve) => {
        child.stderr!.on('data', (d) => {
          out += d;
          if (out.includes(MARKER)) resolve();
        });
      });
      await new Promise((r) => setTimeout(r, offset));
      child.kill(sig);
      assert.equal(await exited, 0, out);
      assert.deepEqual(await engineLeftovers(t.a, pipe), [], out);
    });
  }
}
