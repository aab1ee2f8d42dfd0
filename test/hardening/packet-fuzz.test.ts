/**
 * Short packet-core fuzz inside `npm test` (50k packets of each kind, seeded); the million-packet runs are
 * `npm run reliability -- packet-fuzz` (test/reliability/packet-fuzz.ts has the checks).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { fuzzPacketCore } from '../reliability/packet-fuzz.ts';

for (const kind of ['mutated', 'random'] as const) {
  it(`${kind} packets: no exception, verdicts agree with the parser, only addresses change, counters add up`, () => {
    const r = fuzzPacketCore(kind, 50_000);
    assert.deepEqual(r.failures, []);
    // Random bytes almost never carry a reflect address; mutated fixtures must hit all three outcomes.
    assert.ok(r.malformed > 0 && r.passed > 0 && (kind === 'random' || r.reflected > 0), `a useful mix: ${JSON.stringify(r)}`);
  });
}
