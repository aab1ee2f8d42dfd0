/**
 * Starts the packet worker. In the bundled executable there is no worker file to point at, so the build injects
 * the worker's bundled code as a string and it runs with `eval: true` (see scripts/build.mjs). From source (tsx),
 * worker threads do not inherit tsx's loader hooks, so a two-line bootstrap registers tsx in the worker first.
 */
import { Worker, type TransferListItem } from 'node:worker_threads';
import type { WorkerData } from './worker-protocol.ts';

declare const __RETROFLECT_WORKER_SOURCE__: string | undefined;

export function createPacketWorker(data: WorkerData, transferList: TransferListItem[]): Worker {
  const options = { workerData: data, transferList, eval: true };
  if (typeof __RETROFLECT_WORKER_SOURCE__ === 'string') return new Worker(__RETROFLECT_WORKER_SOURCE__, options);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const workerUrl = new URL('./worker.ts', import.meta.url).href;
  const bootstrap =
    `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(workerUrl)}); });`;
  return new Worker(bootstrap, options);
}
