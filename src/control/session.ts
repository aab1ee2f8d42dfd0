/**
 * What a method may do to the connection it arrived on: the `Session` (connection.ts implements it, the methods in
 * methods/*.ts act on it). Its own module, so the method table and the connection both depend on it and not on
 * each other.
 */
import type { CaptureSink, CaptureSubscription } from './capture-subscription.ts';
import type { AuthMode, CaptureEndParams } from './protocol.ts';
import type { ChangeOrigin } from '../engine/types.ts';

/** What a method may do to the connection it arrived on (connection.ts implements it). */
export interface Session {
  readonly auth: AuthMode;
  readonly authenticated: boolean;
  /** This connection as the origin of a change: the client process where the platform tells (event 1100). */
  readonly origin: ChangeOrigin;
  /** Token mode: check the token and, when it is right, mark the connection authenticated. */
  authenticate(token: unknown): boolean;
  /** Push `sample()` as a `topic` notification every `intervalMs`, replacing an earlier subscription to it. */
  subscribe(topic: SubscriptionTopic, intervalMs: number, sample: () => Promise<unknown>): void;
  unsubscribe(topic: SubscriptionTopic): void;
  /** Close the connection once the reply to this request is written. */
  closeAfterReply(): void;
  /** Run `fn` once the reply to this request is written (stop: reply first, then stop). */
  afterReply(fn: () => void): void;
  /** Stream a capture on this connection (one at a time): `open` gets the connection's sink. */
  startCapture(open: (sink: CaptureSink) => CaptureSubscription): void;
  /** End this connection's capture; null when it has none. */
  stopCapture(): CaptureEndParams | null;
}

export type SubscriptionTopic = 'stats';
