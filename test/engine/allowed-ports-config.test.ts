/**
 * A config's allow lists as the data plane takes them (src/engine/allowed-ports-config.ts): the slots it asks the
 * app gate about, and the wider lists of a live change, during which the data plane must ask the gate about every
 * address either config gave an apps list (the gate itself takes the new lists only when the change is done).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAllowedPorts } from '../../src/config/allow-lists.ts';
import { buildInterceptConfig, type InterceptConfig } from '../../src/config/intercept-config.ts';
import { appGateSlots, widerAllowLists } from '../../src/engine/allowed-ports-config.ts';
import { allowedPortEntries } from '../../src/packet/allowed-ports.ts';

const A = '192.0.2.1';
const B = '192.0.2.2';
const C = '192.0.2.3';
const APP = 'C:\\Tools\\client.exe';
const slotOf = (address: string): number => [A, B, C].indexOf(address);

function config(addresses: string[], allow: InterceptConfig['allow']): InterceptConfig {
  const cfg = buildInterceptConfig(addresses, []);
  cfg.allow = allow;
  return cfg;
}

test('appGateSlots: the slots of reflect addresses with an apps list, nothing else', () => {
  const cfg = config([A, B], [
    { address: A, ports: parseAllowedPorts(['80']) },
    { address: B, apps: [APP] },
    { address: C, apps: [APP] }, // not a reflect address (any more): no slot
  ]);
  assert.deepEqual(appGateSlots(cfg, slotOf), [1]);
  assert.deepEqual(appGateSlots(config([A], []), slotOf), []);
});

test('widerAllowLists: apps lists of either config stay for the change, port lists as before', () => {
  const prev = config([A, B, C], [
    { address: A, apps: [APP] }, // loses its apps list
    { address: B, ports: parseAllowedPorts(['80/tcp']), apps: [APP] }, // keeps it, other app
    { address: C, apps: [APP] }, // leaves the config
  ]);
  const next = config([A, B], [
    { address: A, ports: parseAllowedPorts(['443/tcp']) },
    { address: B, ports: parseAllowedPorts(['81/tcp']), apps: ['C:\\Other\\app.exe'] },
  ]);
  const union = config([A, B, C], widerAllowLists(prev, next));
  assert.deepEqual(union.allow, [
    { address: A, apps: [APP] }, // restricted by ports only in next: unrestricted for the moment
    { address: B, ports: [{ port: 80, protocol: 'tcp' }, { port: 81, protocol: 'tcp' }], apps: ['C:\\Other\\app.exe'] },
    { address: C, apps: [APP] },
  ]);
  assert.deepEqual(appGateSlots(union, slotOf), [0, 1, 2], 'the gate is asked about all three during the change');
  assert.deepEqual(allowedPortEntries(union, slotOf).map((e) => e.slot), [1], 'only B keeps a port list meanwhile');
  assert.deepEqual(appGateSlots(next, slotOf), [1], 'after the change, only B');
});
