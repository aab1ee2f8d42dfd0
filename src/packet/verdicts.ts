/**
 * Every verdict and drop cause a packet can get, in one place: what the data plane decides (`Verdict`) and why it
 * dropped (`DropCause`), why the host firewall dropped before us (`FirewallDropCause`), and what a capture records
 * (`CaptureVerdict`, with its wire names). Backends, the data plane and captures all speak these.
 */

/** Verdicts the data plane gives each packet (engine/dataplane.ts); backends send the batch back by them. */
export const Verdict = {
  /** Addresses were swapped in place: send it back into this host as inbound. */
  Reflect: 1,
  /** Not ours: send it on unchanged, in its original direction. */
  Pass: 2,
  /** Shielded or malformed: do not send it at all. */
  Drop: 3,
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/** Why the data plane dropped a packet: it sets `Dataplane.dropCause` on every drop, and the capture tap reports it. */
export const DropCause = { Malformed: 1, ShieldPort: 2, ForgedSource: 3, NotAllowed: 4 } as const;
export type DropCause = (typeof DropCause)[keyof typeof DropCause];

/** Why the host firewall dropped a packet reported to a `PacketSource.observeFirewallDrops` sink (Linux nft). */
export const FirewallDropCause = { ShieldPort: 1, ForgedSource: 2, NotAllowed: 3 } as const;
export type FirewallDropCause = (typeof FirewallDropCause)[keyof typeof FirewallDropCause];

/** What the engine did with a captured packet (0 is never a verdict: a capture reader rejects it as garbage). */
export const CaptureVerdict = {
  Reflected: 1,
  Passed: 2,
  ShieldDropped: 3,
  Malformed: 4,
  ForgedSourceDropped: 5,
  /** To a reflect address, but not on its allow lists (ports, users, groups, cgroups, apps): refused. */
  NotAllowed: 6,
} as const;
export type CaptureVerdict = (typeof CaptureVerdict)[keyof typeof CaptureVerdict];

/** Wire names of the capture verdicts, index = CaptureVerdict - 1. */
export const CAPTURE_VERDICT_NAMES = ['reflected', 'passed', 'shieldDropped', 'malformed', 'forgedSourceDropped', 'notAllowed'] as const;
export type CaptureVerdictName = (typeof CAPTURE_VERDICT_NAMES)[number];
