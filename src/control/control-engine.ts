/**
 * What the control plane needs from the engine (engine/engine.ts `Engine` matches it structurally; tests use an
 * in-memory stand-in). Checking and deduplicating entries is the control plane's job (config-changes.ts): the
 * engine is handed whole configs.
 */
import type { InterceptConfig } from '../config/intercept-config.ts';
import type { ChangeOrigin, EngineStats, EngineStatus, FlowRecord } from '../engine/types.ts';
import type { CapturePort } from '../capture/port.ts';

export interface ControlEngine {
  status(): EngineStatus;
  config(): InterceptConfig;
  /** Move the running engine to `next` (host state and data plane); `origin` says who asked, for the log. */
  reconfigure(next: InterceptConfig, origin?: ChangeOrigin): Promise<void>;
  stats(): Promise<EngineStats>;
  /** The most recent flows first, at most `limit`, the most recent of them with their process (FlowRecord.pid). */
  flows(limit?: number): FlowRecord[];
  stop(): Promise<void>;
  /** Packet capture: the one port captures are opened and named through. */
  readonly capture: CapturePort;
}
