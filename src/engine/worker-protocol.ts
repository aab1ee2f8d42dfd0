/**
 * Messages between the engine (main thread) and the packet worker. They travel on a dedicated MessagePort that
 * the worker reads synchronously between batches (see worker.ts), never through the worker's event loop.
 */
import type { MessagePort } from 'node:worker_threads';
import type { InterceptConfig } from '../config/intercept-config.ts';
import type { SourceInit, SourceUpdate } from '../packet-sources/packet-source.ts';
import type { DataplaneConfig } from './dataplane.ts';
import type { CaptureSpec } from '../capture/filter.ts';

export interface WorkerData {
  port: MessagePort;
  init: SourceInit;
  config: InterceptConfig;
  dataplane: DataplaneConfig;
  countersBuffer: SharedArrayBuffer;
  flowsBuffer: SharedArrayBuffer;
}

export type MainToWorker =
  /** Decide packets with this config from now on (sent before a route/filter change widens what reaches us). */
  | { type: 'dataplane'; dataplane: DataplaneConfig }
  /** The engine's reconfigure: the host change is done; the final data plane config (Dataplane.configure) plus what
   *  the backend's apply() returned, for PacketSource.adopt. */
  | { type: 'reconfigure'; config: InterceptConfig; dataplane: DataplaneConfig; update: SourceUpdate }
  /** The active captures from now on (empty: capture off). Replaces the previous list. The worker answers
   *  'captureTaken' with the same `seq` once they are in force. */
  | { type: 'capture'; captures: CaptureSpec[]; seq: number }
  | { type: 'stop' };

export type WorkerToMain =
  | { type: 'ready' }
  | { type: 'stopped' }
  /** The captures of 'capture' message `seq` are in force: in the worker's taps and in the backend's kernel data path
   *  (ebpf: its capture maps), so every packet sent from now on is seen by them (the engine waits for it on ebpf).
   *  Sent even when taking them up failed (a 'warning' says why), so no one waits forever. */
  | { type: 'captureTaken'; seq: number }
  /** Something went wrong that the worker survived (the old state stays in force). */
  | { type: 'warning'; error: { code: string; message: string } }
  | { type: 'fatal'; error: { code: string; message: string; hint?: string; details?: Record<string, unknown> } };
