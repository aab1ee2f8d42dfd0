/**
 * The address methods: address.list, address.add, address.remove (whole addresses or only their port maps),
 * address.set (desired state) and address.test. Changes go through config-changes.ts; address.test asks the host's
 * AddressRules.
 */
import { portMapsFor } from '../../config/port-maps.ts';
import { addressSource } from '../../config/layers.ts';
import { ErrorCode, isRetroflectError } from '../../errors.ts';
import { ALLOW_KINDS, allowListsFor } from '../../config/allow-lists.ts';
import { invalidParams } from '../../error-messages.ts';
import { addressTestResult } from '../address-test.ts';
import type { AddressTestResult } from '../protocol.ts';
import { addressList, allowChange, only, optionalBool, portMapRemovals, portMapSpecs, wantedAddresses, type Params } from './params.ts';
import type { MethodContext, MethodTablePart } from './table.ts';

/** Longest address.test input (an IPv6 address with a zone is far shorter). */
const MAX_TEST_INPUT_CHARS = 256;

async function testAddress(params: Params, ctx: MethodContext): Promise<AddressTestResult> {
  only(params, ['address']);
  const input = params.address;
  if (typeof input !== 'string' || input.length === 0 || input.length > MAX_TEST_INPUT_CHARS) throw invalidParams("'address' must be a non-empty string.", 'address');
  return addressTestResult(input, ctx.engine.config().reflectAddresses, ctx.addressRules);
}

export const addressMethods: MethodTablePart<'address.list' | 'address.add' | 'address.remove' | 'address.set' | 'address.test'> = {
  'address.list': (params, { engine, store, changes }) => {
    only(params, []);
    // Without a config file (`run --no-config`) nothing is persisted, whatever the store remembers.
    const persistedConfig = store.path === null ? null : store.config;
    const persisted = persistedConfig?.reflectAddresses ?? [];
    const policy = changes.policy.config;
    const running = engine.config();
    return {
      addresses: running.reflectAddresses.map((address) => ({
        address,
        persisted: persisted.includes(address),
        source: addressSource(address, policy, persistedConfig),
        portMaps: portMapsFor(running, address),
        allow: allowListsFor(running, address),
      })),
    };
  },
  'address.set': (params, { changes, session }) => {
    only(params, ['addresses', 'whatIf']);
    return changes.setAddresses(session.origin, wantedAddresses(params), optionalBool(params, 'whatIf'));
  },
  'address.add': (params, { changes, session }) => {
    only(params, ['addresses', 'temporary', 'maps', ...ALLOW_KINDS]);
    return changes.addAddresses(session.origin, addressList(params), optionalBool(params, 'temporary'), portMapSpecs(params), allowChange(params));
  },
  'address.remove': (params, { changes, session }) => {
    only(params, ['addresses', 'temporary', 'maps', 'skipMissing']);
    const removals = portMapRemovals(params);
    const opts = { temporary: optionalBool(params, 'temporary'), skipMissing: optionalBool(params, 'skipMissing') };
    if (removals !== null) return changes.removePortMaps(session.origin, addressList(params), removals, opts);
    return changes.removeAddresses(session.origin, addressList(params), opts);
  },
  'address.test': testAddress,
};
