/**
 * What the control plane needs from the engine (engine/engine.ts `Engine` matches it structurally; tests use an
 * in-memory stand-in). Checking and deduplicating entries is the control plane's job (config-changes.ts): the
 * engine is handed whole configs.
 */
import type { InterceptConfig } from '../config/intercept-config.ts';
import type { EngineStats, EngineStatus, FlowRecord } from '../engine/types.ts';
import type { CaptureOptions, CaptureSession } from '../capture/hub.ts';

export interface ControlEngine {
  status(): EngineStatus;
  config(): InterceptConfig;
  /** Move the running engine to `next` (host state and data plane). */
  reconfigure(next: InterceptConfig): Promise<void>;
  stats(): Promise<EngineStats>;
  flows(): FlowRecord[];
  stop(): Promise<void>;
  /** Packet capture (capture/hub.ts); an engine without it answers capture.start with E_BACKEND_UNAVAILABLE. */
  openCapture?(opts: CaptureOptions): CaptureSession;
  /** What captures call interface `ifIndex` (the backend's naming); there with openCapture. */
  interfaceName?(ifIndex: number): string;
}
