/** The shield port methods: shield.list, shield.add, shield.remove and shield.set (changes through config-changes.ts). */
import { shieldKey } from '../../config/intercept-config.ts';
import { shieldSource } from '../../config/layers.ts';
import { only, optionalBool, portList, wantedPorts } from './params.ts';
import type { MethodTablePart } from './table.ts';

export const shieldMethods: MethodTablePart<'shield.list' | 'shield.add' | 'shield.remove' | 'shield.set'> = {
  'shield.list': (params, { engine, store, changes }) => {
    only(params, []);
    const persistedConfig = store.path === null ? null : store.config;
    const persisted = new Set(persistedConfig?.shieldPorts.map(shieldKey) ?? []);
    const policy = changes.policy.config;
    return {
      ports: engine.config().shieldPorts.map((p) => ({
        port: p.port,
        protocol: p.protocol,
        persisted: persisted.has(shieldKey(p)),
        source: shieldSource(p, policy, persistedConfig),
      })),
    };
  },
  'shield.set': (params, { changes, session }) => {
    only(params, ['ports', 'whatIf']);
    return changes.setShieldPorts(session.origin, wantedPorts(params), optionalBool(params, 'whatIf'));
  },
  'shield.add': (params, { changes, session }) => {
    only(params, ['ports', 'temporary']);
    return changes.addShieldPorts(session.origin, portList(params), optionalBool(params, 'temporary'));
  },
  'shield.remove': (params, { changes, session }) => {
    only(params, ['ports', 'temporary', 'skipMissing']);
    return changes.removeShieldPorts(session.origin, portList(params), { temporary: optionalBool(params, 'temporary'), skipMissing: optionalBool(params, 'skipMissing') });
  },
};
