/** The methods that read the engine or stop it: status, stats, flows, config.get and stop. */
import { invalidParams } from '../../error-messages.ts';
import { only } from './params.ts';
import type { MethodTablePart } from './table.ts';

/** Most flows one `flows` reply carries. */
const MAX_FLOWS = 100_000;

export const engineMethods: MethodTablePart<'status' | 'stats' | 'flows' | 'config.get' | 'stop'> = {
  status: (params, { engine }) => {
    only(params, []);
    return engine.status();
  },
  stats: (params, { engine }) => {
    only(params, []);
    return engine.stats();
  },
  flows: (params, { engine }) => {
    only(params, ['limit']);
    const limit = params.limit ?? MAX_FLOWS;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_FLOWS) {
      throw invalidParams(`'limit' must be an integer from 1 to ${MAX_FLOWS}.`, 'limit');
    }
    const flows = [...engine.flows(limit)].sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : 0));
    return { flows: flows.slice(0, limit) };
  },
  'config.get': (params, { engine, store }) => {
    only(params, []);
    return { configPath: store.path, persisted: store.config, running: engine.config() };
  },
  stop: (params, { engine, session, log }) => {
    only(params, []);
    // Reply first, then stop: the engine's 'stopped' event closes the server and every connection.
    session.afterReply(() => void engine.stop().catch((err) => log(`control: stop failed: ${(err as Error).message}`)));
    return { stopping: true };
  },
};
