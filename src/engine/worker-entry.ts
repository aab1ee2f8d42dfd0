/**
 * Starts the packet worker. From source (tsx) the worker is worker.ts beside this file; in the bundled executable
 * there is no file to point at, so the build injects the worker's bundled code as a string and we run it with
 * `eval: true` (see scripts/build.mjs).
 */
import { Worker, type TransferListItem } from 'node:worker_threads';
import type { WorkerData } from './worker-protocol.ts';

declare const __RETROFLECT_WORKER_SOURCE__: string | undefined;

export function createPacketWorker(data: WorkerData, transferList: TransferListItem[]): Worker {
  const options = { workerData: data, transferList, stdout: false, stderr: false };
  if (typeof __RETROFLECT_WORKER_SOURCE__ === 'string') {
    return new Worker(__RETROFLECT_WORKER_SOURCE__, { ...options, eval: true });
  }
  return new Worker(new URL('./worker.ts', import.meta.url), options);
}
