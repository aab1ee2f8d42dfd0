/**
 * The methods that act on the connection they came on: hello (protocol version, token), subscribe / unsubscribe
 * (stats notifications) and capture.start / capture.stop (a capture streamed on this connection).
 */
import { accessDenied, invalidParams } from '../../error-messages.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { VERSION } from '../../version.ts';
import { CaptureSubscription } from '../capture-subscription.ts';
import { MAX_ID_CHARS, METHODS, PROTOCOL_VERSION, type CaptureStartResult } from '../protocol.ts';
import { only } from './params.ts';
import type { MethodTablePart } from './table.ts';

/** Allowed stats notification intervals (ms) and the default. */
const MIN_INTERVAL_MS = 100;
const MAX_INTERVAL_MS = 60_000;
const DEFAULT_INTERVAL_MS = 1000;

export const sessionMethods: MethodTablePart<'hello' | 'subscribe' | 'unsubscribe' | 'capture.start' | 'capture.stop'> = {
  hello: (params, { engine, session }) => {
    only(params, ['protocol', 'client', 'token']);
    const protocol = params.protocol;
    if (typeof protocol !== 'number' || !Number.isInteger(protocol)) throw invalidParams("'protocol' must be an integer (1).", 'protocol');
    if (protocol !== PROTOCOL_VERSION) {
      throw new RetroflectError(ErrorCode.UNSUPPORTED_VERSION, `Protocol version ${protocol} is not supported; this engine speaks ${PROTOCOL_VERSION}.`, {
        hint: 'Update the client or the engine so both speak the same protocol version.',
        details: { supported: [PROTOCOL_VERSION] },
      });
    }
    if (params.client !== undefined && (typeof params.client !== 'string' || params.client.length > MAX_ID_CHARS)) {
      throw invalidParams(`'client' must be a string of at most ${MAX_ID_CHARS} characters.`, 'client');
    }
    if (params.token !== undefined && typeof params.token !== 'string') throw invalidParams("'token' must be a string.", 'token');
    if (session.auth === 'token' && !session.authenticate(params.token)) {
      session.closeAfterReply();
      throw accessDenied(
        'The access token is missing or wrong.',
        'Run the client as Administrator: it reads the token from %ProgramData%\\Retroflect\\<pipe>.token.',
      );
    }
    return {
      protocol: PROTOCOL_VERSION,
      server: `retroflect/${VERSION}`,
      engineVersion: engine.status().version,
      pid: process.pid,
      auth: session.auth,
      capabilities: [...METHODS],
    };
  },
  subscribe: (params, { engine, session }) => {
    only(params, ['topic', 'intervalMs']);
    if (params.topic !== 'stats') throw invalidParams("'topic' must be \"stats\".", 'topic');
    const iv = params.intervalMs ?? DEFAULT_INTERVAL_MS;
    if (typeof iv !== 'number' || !Number.isInteger(iv) || iv < MIN_INTERVAL_MS || iv > MAX_INTERVAL_MS) {
      throw invalidParams(`'intervalMs' must be an integer from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}.`, 'intervalMs');
    }
    session.subscribe('stats', iv, () => engine.stats());
    return { topic: 'stats', intervalMs: iv };
  },
  unsubscribe: (params, { session }) => {
    only(params, ['topic']);
    if (params.topic !== 'stats') throw invalidParams("'topic' must be \"stats\".", 'topic');
    session.unsubscribe('stats');
    return { topic: 'stats', subscribed: false };
  },
  'capture.start': (params, { engine, session }) => {
    let started: Promise<CaptureStartResult> | undefined;
    session.startCapture((sink) => {
      const opened = CaptureSubscription.start(engine.capture, params, sink);
      started = opened.started;
      return opened.sub;
    });
    // startCapture opens the capture at once (or throws); the answer waits until the engine has taken it up.
    return started!;
  },
  'capture.stop': (params, { session }) => {
    only(params, []);
    return session.stopCapture() ?? { id: null, captured: 0, dropped: 0, reason: 'notCapturing' };
  },
};
