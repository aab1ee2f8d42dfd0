/**
 * The capture port: everything a reader of captures (the control plane) needs from the engine, which provides it as
 * `Engine.capture`. One interface, so a captured packet takes one road: packet worker → ring → hub → this port →
 * encoder (encoder.ts) → the client's connection.
 */
import type { CaptureOptions, CaptureSession } from './hub.ts';

export interface CapturePort {
  /** Start copying matching packets to a client (hub.ts); E_LIMIT_REACHED past MAX_CAPTURE_CLIENTS. */
  open(opts: CaptureOptions): CaptureSession;
  /** The backend's kind ("tun", "windivert"): interface descriptions say who handed the packets over. */
  readonly backend: string;
  /** The name captures give interface `ifIndex` (0: the backend's own, e.g. its TUN device). */
  interfaceName(ifIndex: number): string;
}
