/** The shield port methods: shield.list, shield.add and shield.remove (changes through config-changes.ts). */
import { shieldKey } from '../../config/intercept-config.ts';
import { only, optionalBool, portList } from './params.ts';
import type { MethodTablePart } from './table.ts';

export const shieldMethods: MethodTablePart<'shield.list' | 'shield.add' | 'shield.remove'> = {
  'shield.list': (params, { engine, store }) => {
    only(params, []);
    const persisted = new Set(store.path === null ? [] : store.config.shieldPorts.map(shieldKey));
    return { ports: engine.config().shieldPorts.map((p) => ({ port: p.port, protocol: p.protocol, persisted: persisted.has(shieldKey(p)) })) };
  },
  'shield.add': (params, { changes }) => {
    only(params, ['ports', 'temporary']);
    return changes.addShieldPorts(portList(params), optionalBool(params, 'temporary'));
  },
  'shield.remove': (params, { changes }) => {
    only(params, ['ports', 'temporary', 'skipMissing']);
    return changes.removeShieldPorts(portList(params), { temporary: optionalBool(params, 'temporary'), skipMissing: optionalBool(params, 'skipMissing') });
  },
};
