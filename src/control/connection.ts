/**
 * One control connection: newline-delimited JSON framing, access (peer credentials on Linux, the token in hello
 * on Windows), requests answered one at a time in order, back-pressure, and subscriptions. What each method does is
 * handlers.ts; the connection is the `Session` a handler acts on. Nothing a client does (garbage, huge lines, not
 * reading, vanishing) affects the engine or other connections.
 */
import type net from 'node:net';
import { badRequest as badRequestError, controlAccessDenied, internalError } from '../error-messages.ts';
import { ErrorCode, RetroflectError, isRetroflectError } from '../errors.ts';
import { describePeer, isAllowedPeer, peerCredentials, type PeerCredentials } from './peer-credentials.ts';
import type { ChangeOrigin } from '../engine/types.ts';
import type { MethodHandlers } from './handlers.ts';
import type { Session, SubscriptionTopic } from './session.ts';
import type { CaptureSink, CaptureSubscription } from './capture-subscription.ts';
import {
  MAX_ID_CHARS,
  MAX_LINE_BYTES,
  MAX_PENDING_REQUESTS,
  MAX_UNSENT_BYTES,
  MAX_UNSENT_NOTIFY_BYTES,
  type AuthMode,
  type CaptureEndParams,
  type Reply,
  type RequestId,
} from './protocol.ts';

export interface ConnectionContext {
  auth: AuthMode;
  handlers: MethodHandlers;
  log: (message: string) => void;
  /** Token mode: is this the endpoint's token? */
  checkToken: (token: unknown) => boolean;
  firstRequestTimeoutMs: number;
  idleTimeoutMs: number;
  /** A request line must be complete this long after its first byte (LINE_TIMEOUT_MS). */
  lineTimeoutMs: number;
}

/** Decodes UTF-8 strictly: a request with invalid bytes is refused, not silently repaired. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** One client: framing, access (peer credentials / token), request order, back-pressure and subscriptions. */
export class Connection implements Session {
  private readonly socket: net.Socket;
  private readonly ctx: ConnectionContext;
  /** Bytes of the line being received (no newline yet). */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private readonly queue: string[] = [];
  private working = false;
  /** A request is being handled (taken off the queue, not yet answered). */
  private handling = false;
  private gotFirstLine = false;
  authenticated: boolean;
  private closing = false;
  private firstTimer: NodeJS.Timeout | null;
  private readonly subscriptions = new Map<SubscriptionTopic, { timer: NodeJS.Timeout; busy: boolean }>();
  /** Callbacks for after the reply to the request being handled is written. */
  private afterReplyFns: (() => void)[] = [];
  private capture: CaptureSubscription | null = null;
  /** Runs while a request line is incomplete: a client trickling bytes cannot hold a connection slot. */
  private lineTimer: NodeJS.Timeout | null = null;
  /** Restarted by each request (not by bare bytes, not by blank lines), so only real use keeps a slot. */
  private idleTimer: NodeJS.Timeout | null = null;

  /** The kernel's word on the peer (Linux); null where the platform does not tell (a Windows named pipe). */
  private readonly peer: PeerCredentials | null;
  private changeOrigin: ChangeOrigin | null = null;

  constructor(socket: net.Socket, ctx: ConnectionContext) {
    this.socket = socket;
    this.ctx = ctx;
    this.authenticated = ctx.auth !== 'token';
    socket.on('error', () => undefined); // resets and EPIPE from vanished clients are normal
    this.firstTimer = setTimeout(() => this.destroy(), ctx.firstRequestTimeoutMs);
    this.restartIdleTimer();
    this.peer = peerCredentials(socket);
    if (ctx.auth === 'peer-credentials') {
      const cred = this.peer;
      if (!isAllowedPeer(cred)) {
        ctx.log(`control: refused a client (uid ${cred?.uid ?? 'unknown'}, pid ${cred?.pid ?? 'unknown'})`);
        this.send({
          id: null,
          error: controlAccessDenied('Only root may control the retroflect engine.', { uid: cred?.uid ?? null }).toJSON(),
        });
        this.end();
        return;
      }
    }
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  /**
   * Bytes read but not yet split into lines: a read may hold thousands of pipelined requests, and only
   * MAX_PENDING_REQUESTS of them are taken at a time (the rest wait here, the socket paused, until work() catches up).
   */
  private unparsed: Buffer | null = null;

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    this.unparsed = this.unparsed ? Buffer.concat([this.unparsed, chunk]) : chunk;
    this.takeLines();
  }

  /** Split unparsed bytes into requests until MAX_PENDING_REQUESTS are queued; then stop reading the socket. */
  private takeLines(): void {
    const chunk = this.unparsed ?? Buffer.alloc(0);
    let start = 0;
    while (start < chunk.length && this.queue.length < MAX_PENDING_REQUESTS && !this.closing) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      if (this.partialBytes + (end - start) > MAX_LINE_BYTES) {
        this.unparsed = null;
        this.send({ id: null, error: { code: ErrorCode.BAD_REQUEST, message: `Request line longer than ${MAX_LINE_BYTES} bytes; closing the connection.`, hint: 'Send one JSON object per line, each at most 64 KiB.' } });
        this.end();
        return;
      }
      if (end > start) {
        if (this.partialBytes === 0 && nl === -1 && this.lineTimer === null) {
          this.lineTimer = setTimeout(() => {
            this.send(badRequest(null, `The request line was not completed within ${this.ctx.lineTimeoutMs} ms; closing the connection.`));
            this.end();
          }, this.ctx.lineTimeoutMs);
        }
        this.partial.push(chunk.subarray(start, end));
        this.partialBytes += end - start;
      }
      if (nl === -1) {
        start = chunk.length;
        break;
      }
      if (this.lineTimer) clearTimeout(this.lineTimer);
      this.lineTimer = null;
      const line = this.partial.length === 1 ? this.partial[0] : Buffer.concat(this.partial, this.partialBytes);
      this.partial = [];
      this.partialBytes = 0;
      start = nl + 1;
      this.onLine(line);
    }
    this.unparsed = start < chunk.length ? chunk.subarray(start) : null;
    // Stop reading while requests wait: the kernel's socket buffer, not our memory, holds the client's backlog.
    if (this.unparsed !== null || this.queue.length >= MAX_PENDING_REQUESTS) this.socket.pause();
    else if (this.socket.isPaused() && !this.closing) this.socket.resume();
  }

  private onLine(line: Buffer | undefined): void {
    if (!this.gotFirstLine) {
      this.gotFirstLine = true;
      if (this.firstTimer) clearTimeout(this.firstTimer);
      this.firstTimer = null;
    }
    let text: string;
    try {
      text = utf8.decode(line ?? Buffer.alloc(0));
    } catch {
      this.enqueue('\u0000bad-utf8');
      return;
    }
    if (text.endsWith('\r')) text = text.slice(0, -1);
    if (text.trim() === '') return;
    this.enqueue(text);
  }

  private restartIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.subscriptions.size === 0 && this.capture === null) this.destroy();
      else this.restartIdleTimer(); // a subscriber or a capture may listen quietly
    }, this.ctx.idleTimeoutMs);
  }

  private enqueue(text: string): void {
    this.restartIdleTimer();
    this.queue.push(text);
    if (!this.working) void this.work();
  }

  /** Requests read and not yet answered on this connection (queued plus the one being handled). */
  get pendingRequests(): number {
    return this.queue.length + (this.handling ? 1 : 0);
  }

  /**
   * Handle queued lines one at a time, in order; wait for the client to read when too much is unsent. Between two
   * requests the event loop runs (setImmediate), so a connection with a long backlog takes turns with the others.
   */
  private async work(): Promise<void> {
    this.working = true;
    try {
      while (this.queue.length > 0 && !this.closing) {
        const text = this.queue.shift()!;
        this.handling = true;
        const reply = await this.handleLine(text);
        this.handling = false;
        const after = this.afterReplyFns.splice(0);
        this.send(reply, after.length ? () => after.forEach((fn) => fn()) : undefined);
        if (this.socket.writableLength > MAX_UNSENT_BYTES) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              this.socket.off('drain', done);
              this.socket.off('close', done);
              resolve();
            };
            this.socket.once('drain', done);
            this.socket.once('close', done);
          });
        }
        if (this.queue.length < MAX_PENDING_REQUESTS / 2) this.takeLines();
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.working = false;
      this.handling = false;
    }
  }

  private async handleLine(text: string): Promise<Reply> {
    if (text === '\u0000bad-utf8') return badRequest(null, 'The request line is not valid UTF-8.');
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      return badRequest(null, `The request line is not valid JSON (${(err as Error).message}).`);
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return badRequest(null, 'A request must be a JSON object.');
    const req = msg as Record<string, unknown>;
    const id = req.id;
    const idOk = (typeof id === 'number' && Number.isFinite(id)) || (typeof id === 'string' && id.length <= MAX_ID_CHARS);
    if (!idOk) return badRequest(null, "The request has no usable 'id' (a string of at most 128 characters, or a finite number).");
    const rid = id as RequestId;
    for (const key of Object.keys(req)) {
      if (key !== 'id' && key !== 'method' && key !== 'params') return badRequest(rid, `Unknown request field '${key}'.`);
    }
    if (typeof req.method !== 'string') return badRequest(rid, "The request has no 'method' string.");
    const params = req.params ?? {};
    if (typeof params !== 'object' || params === null || Array.isArray(params)) {
      return { id: rid, error: { code: ErrorCode.INVALID_PARAMS, message: "'params' must be a JSON object.", details: { field: 'params' } } };
    }
    try {
      return { id: rid, result: await this.ctx.handlers.handle(req.method, params as Record<string, unknown>, this) };
    } catch (err) {
      return { id: rid, error: toWireError(err) };
    }
  }

  // Session: what a method handler may do to this connection.

  get auth(): AuthMode {
    return this.ctx.auth;
  }

  /** Read at the first change (the client waits for its reply, so its process is still there), then kept. */
  get origin(): ChangeOrigin {
    this.changeOrigin ??= { kind: 'client', client: this.peer === null ? null : describePeer(this.peer) };
    return this.changeOrigin;
  }

  authenticate(token: unknown): boolean {
    const ok = this.ctx.checkToken(token);
    if (ok) this.authenticated = true;
    return ok;
  }

  subscribe(topic: SubscriptionTopic, intervalMs: number, sample: () => Promise<unknown>): void {
    this.unsubscribe(topic);
    const sub = { timer: setInterval(() => void this.push(topic, sub, sample), intervalMs), busy: false };
    this.subscriptions.set(topic, sub);
  }

  unsubscribe(topic: SubscriptionTopic): void {
    const sub = this.subscriptions.get(topic);
    if (sub) clearInterval(sub.timer);
    this.subscriptions.delete(topic);
  }

  afterReply(fn: () => void): void {
    this.afterReplyFns.push(fn);
  }

  startCapture(open: (sink: CaptureSink) => CaptureSubscription): void {
    if (this.capture !== null) {
      throw new RetroflectError(ErrorCode.INVALID_PARAMS, 'This connection is already capturing.', {
        hint: "Send 'capture.stop' first, or open another connection for a second capture.",
        details: { field: 'method' },
      });
    }
    this.capture = open({
      notify: (method, params) => {
        if (!this.closing && !this.socket.destroyed) this.socket.write(JSON.stringify({ method, params }) + '\n');
      },
      unsent: () => this.socket.writableLength,
      abandon: () => {
        this.ctx.log('control: a capture client stopped reading; closing its connection');
        this.capture = null;
        this.destroy();
      },
    });
  }

  stopCapture(): CaptureEndParams | null {
    const ended = this.capture?.end('stopped') ?? null;
    this.capture = null;
    return ended;
  }

  private async push(topic: SubscriptionTopic, sub: { busy: boolean }, sample: () => Promise<unknown>): Promise<void> {
    // Skip (not queue) a sample while the subscriber is behind or the previous sample is still being taken.
    if (sub.busy || this.closing || this.socket.writableLength > MAX_UNSENT_NOTIFY_BYTES) return;
    sub.busy = true;
    try {
      const params = await sample();
      if (!this.closing && this.subscriptions.get(topic) === sub) this.socket.write(JSON.stringify({ method: topic, params }) + '\n');
    } catch {
      /* engine stopping: the connection closes soon */
    } finally {
      sub.busy = false;
    }
  }

  private send(reply: Reply, written?: () => void): void {
    if (this.socket.destroyed || this.socket.writableEnded) return void written?.();
    this.socket.write(JSON.stringify(reply) + '\n', written);
  }

  closeAfterReply(): void {
    this.closing = true;
    setImmediate(() => this.end());
  }

  private end(): void {
    // A client that never reads would keep a half-closed socket forever.
    this.finish(2000);
  }

  /** Send what is unsent, then close; destroyed after `flushMs` whether or not the client read it all. */
  finish(flushMs: number): void {
    this.closing = true;
    this.socket.pause();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), flushMs).unref();
  }

  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }

  dispose(): void {
    this.closing = true;
    for (const topic of [...this.subscriptions.keys()]) this.unsubscribe(topic);
    this.stopCapture();
    if (this.firstTimer) clearTimeout(this.firstTimer);
    this.firstTimer = null;
    if (this.lineTimer) clearTimeout(this.lineTimer);
    this.lineTimer = null;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.queue.length = 0;
  }
}

function badRequest(id: RequestId | null, message: string): Reply {
  return { id, error: badRequestError(message).toJSON() };
}

function toWireError(err: unknown): ReturnType<RetroflectError['toJSON']> {
  return (isRetroflectError(err) ? err : internalError(err)).toJSON();
}
