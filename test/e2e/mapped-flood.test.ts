/**
 * One local program floods the mapped-flow table (issue 19, item 17): 20,000 UDP flows to a mapped port that no server
 * answers (its target is closed), more than the table's 16,384 entries, sent through a raw socket as fast as it
 * takes them (paced to the TUN queue). Another program's mapped UDP must still work, at once: a new flow takes the slot of an unanswered one
 * (src/engine/port-mapper.ts). Real `retroflect run` in a namespace.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTopology, JsonLines, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';

const node = process.execPath;
const R = '192.0.2.1';
const FLOWS = 20000;
const ROUNDS = 19;

let t: Topology;
let dir: string;
let engine: EngineHandle | undefined;
let server: JsonLines | undefined;
before(async () => {
  t = await createTopology('mflood');
  dir = privateDir('mflood');
  // 5300 → 5353 is served; 6000 → 6001 has no server (the flood's flows are never answered).
  server = new JsonLines(t.a.spawn(node, ['--import', 'tsx', 'test/fixtures/probe.ts', 'serve', '', '5353']));
  await server.next((o) => o.ready === true);
  engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', R] });
  const add = await engine.cli(['address', 'add', R, '--map', '5300=5353/udp', '--map', '6000=6001/udp', '--temporary']);
  assert.equal(add.code, 0, add.stderr);
});
after(async () => {
  server?.child.kill();
  await engine?.kill();
  await t?.destroy();
  removeDir(dir);
});

test(`${FLOWS} flooded UDP flows leave another program's mapped UDP working (${ROUNDS}/${ROUNDS})`, { timeout: 180_000 }, async (ctx) => {
  const r = await t.a.run(node, ['--import', 'tsx', 'test/fixtures/raw-send.ts', t.a4, R, '6000', String(FLOWS), '64', 'flood', String(FLOWS), '25'], { timeoutMs: 120_000 });
  const flood = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { sent: number; failed: number };
  assert.equal(flood.sent, FLOWS, r.stderr);
  let ok = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const p = await t.a.run(node, ['--import', 'tsx', 'test/fixtures/probe.ts', 'udp', R, '5300', '1000']);
    if (JSON.stringify(JSON.parse(p.stdout)) === JSON.stringify({ ok: true, reply: `peer=${R}` })) ok++;
  }
  const stats = (await engine!.cli(['stats'])).json as { portMapRefused: number; reflected: { packets: number } };
  ctx.diagnostic(JSON.stringify({ flood, ok, portMapRefused: stats.portMapRefused, reflected: stats.reflected.packets }));
  // More flows than the table has entries reached the engine (a few of the flood may be lost in the device's queue).
  assert.ok(stats.reflected.packets > 16384 + 1000, 'the flood did not fill the table: the test proves nothing');
  assert.equal(ok, ROUNDS);
  assert.equal(stats.portMapRefused, 0);
});
