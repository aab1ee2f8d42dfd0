/**
 * Crafted packets onto the real engine's TUN device (`--backend tun`: the books are the device's counters), end to
 * end (test/reliability/tun-injector.ts): the engine
 * stays up, and every packet the kernel handed it was decided and counted (reflected, passed or counted as
 * malformed), and every reflected one was written back. Short here (5k packets); `npm run reliability --
 * tun-fuzz [count]` runs more.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTopology, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';
import { runTunFuzz } from '../reliability/tun-fuzz.ts';

let t: Topology;
let dir: string;
let engine: EngineHandle | undefined;
before(async () => {
  t = await createTopology('tunfz');
  dir = privateDir('tunfz');
  const args = ['--reflect', '192.0.2.1', '2001:db8::1', '--shield', '8080/tcp', '--backend', 'tun'];
  engine = await startEngine(t.a, dir, { config: false, args });
});
after(async () => {
  await engine?.kill();
  await t?.destroy();
  removeDir(dir);
});

test('5,000 crafted packets through the engine: alive, every packet it got decided and counted, reflected ones written back', { timeout: 120_000 }, async (ctx) => {
  const r = await runTunFuzz(t.a, engine!, 5000, 7);
  ctx.diagnostic(JSON.stringify(r));
  assert.ok(r.handedToEngine > 1000, JSON.stringify(r));
  assert.equal(r.decided, r.handedToEngine, `decided vs handed to the engine: ${JSON.stringify(r)}`);
  assert.equal(r.writtenBack, r.reflected, JSON.stringify(r));
  assert.ok(r.reflected > 0 && r.malformed > 0, JSON.stringify(r));
  assert.ok(r.returnedToInjector > 0 && r.returnedToInjector <= r.reflected, JSON.stringify(r));
  assert.equal(r.state, 'running');
});
