/**
 * The address methods: address.list, address.add, address.remove (whole addresses or only their port maps) and
 * address.test. Changes go through config-changes.ts; address.test asks the host's AddressRules.
 */
import { portMapsFor } from '../../config/port-maps.ts';
import { ALLOW_KINDS, allowListsFor } from '../../config/allow-lists.ts';
import { invalidParams } from '../../error-messages.ts';
import { addressTestResult } from '../address-test.ts';
import type { AddressTestResult } from '../protocol.ts';
import { addressList, allowChange, only, optionalBool, portMapRemovals, portMapSpecs, type Params } from './params.ts';
import type { MethodContext, MethodTablePart } from './table.ts';

/** Longest address.test input (an IPv6 address with a zone is far shorter). */
const MAX_TEST_INPUT_CHARS = 256;

async function testAddress(params: Params, ctx: MethodContext): Promise<AddressTestResult> {
  only(params, ['address']);
  const input = params.address;
  if (typeof input !== 'string' || input.length === 0 || input.length > MAX_TEST_INPUT_CHARS) throw invalidParams("'address' must be a non-empty string.", 'address');
  return addressTestResult(input, ctx.engine.config().reflectAddresses, ctx.addressRules);
}

export const addressMethods: MethodTablePart<'address.list' | 'address.add' | 'address.remove' | 'address.test'> = {
  'address.list': (params, { engine, store }) => {
    only(params, []);
    // Without a config file (`run --no-config`) nothing is persisted, whatever the store remembers.
    const persisted = store.path === null ? [] : store.config.reflectAddresses;
    const running = engine.config();
    return {
      addresses: running.reflectAddresses.map((address) => ({
        address,
        persisted: persisted.includes(address),
        portMaps: portMapsFor(running, address),
        allow: allowListsFor(running, address),
      })),
    };
  },
  'address.add': (params, { changes }) => {
    only(params, ['addresses', 'temporary', 'maps', ...ALLOW_KINDS]);
    return changes.addAddresses(addressList(params), optionalBool(params, 'temporary'), portMapSpecs(params), allowChange(params));
  },
  'address.remove': (params, { changes }) => {
    only(params, ['addresses', 'temporary', 'maps', 'skipMissing']);
    const removals = portMapRemovals(params);
    const opts = { temporary: optionalBool(params, 'temporary'), skipMissing: optionalBool(params, 'skipMissing') };
    if (removals !== null) return changes.removePortMaps(addressList(params), removals, opts);
    return changes.removeAddresses(addressList(params), opts);
  },
  'address.test': testAddress,
};
