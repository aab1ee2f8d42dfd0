/**
 * Client of the control pipe (used by the CLI and tests): connect with a timeout, say hello, call methods, receive
 * notifications. Replies are matched by id, so calls may overlap. Every failure is a RetroflectError.
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { controlAccessDenied } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { resolveEndpoint, type ControlEndpoint } from './endpoint-address.ts';
import {
  PROTOCOL_VERSION,
  type HelloResult,
  type MethodName,
  type MethodResults,
  type Notification,
  type WireError,
} from './protocol.ts';

/** Default time to connect and to wait for a reply. Changes touch routes/firewall, so replies can take a while. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 3000;
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
/** Longest reply line the client accepts (a flows reply with many flows is the largest). */
const MAX_REPLY_BYTES = 256 * 1024 * 1024;

export interface ConnectOptions {
  /** Pipe name or Linux socket path (default: env RETROFLECT_PIPE, then `retroflect`). */
  pipe?: string;
  timeoutMs?: number;
  callTimeoutMs?: number;
  clientName?: string;
  /** Where to read the access token (default: the endpoint's token file, if readable). */
  tokenPath?: string;
  /** Skip hello (tests of "requests before hello"). */
  skipHello?: boolean;
}

function notRunning(ep: ControlEndpoint, cause?: unknown): RetroflectError {
  return new RetroflectError(ErrorCode.ENGINE_NOT_RUNNING, `No retroflect engine is answering on ${ep.path}.`, {
    hint:
      process.platform === 'win32'
        ? "Start one from an elevated prompt with 'retroflect run' (or Start-Retroflect), or pass the right --pipe."
        : "Start one as root with 'sudo retroflect run' (or the systemd unit), or pass the right --pipe.",
    details: { pipe: ep.name },
    cause,
  });
}

/** Errors the engine sent (as opposed to connection failures the client saw itself). */
const serverErrors = new WeakSet<RetroflectError>();

export function isServerError(err: unknown): boolean {
  return err instanceof RetroflectError && serverErrors.has(err);
}

function fromWire(e: WireError): RetroflectError {
  const err = new RetroflectError(e.code, e.message, { hint: e.hint, details: e.details });
  serverErrors.add(err);
  return err;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: RetroflectError) => void;
  timer: NodeJS.Timeout;
  method: string;
}

export class ControlClient {
  readonly endpoint: ControlEndpoint;
  /** The server's hello reply (null with skipHello). */
  hello: HelloResult | null = null;
  private readonly socket: net.Socket;
  private readonly callTimeoutMs: number;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(n: Notification) => void>();
  private nextId = 1;
  private buffer = '';
  private closedError: RetroflectError | null = null;

  private constructor(socket: net.Socket, endpoint: ControlEndpoint, callTimeoutMs: number) {
    this.socket = socket;
    this.endpoint = endpoint;
    this.callTimeoutMs = callTimeoutMs;
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => this.onData(s));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closedError ??= new RetroflectError(ErrorCode.ENGINE_NOT_RUNNING, 'The engine closed the control connection.', {
        hint: 'The engine may have stopped; check it with retroflect status.',
        details: { pipe: endpoint.name },
      });
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(this.closedError);
      }
      this.pending.clear();
    });
  }

  static async connect(opts: ConnectOptions = {}): Promise<ControlClient> {
    const ep = resolveEndpoint(opts.pipe);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(ep.path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new RetroflectError(ErrorCode.TIMEOUT, `Timed out after ${timeoutMs} ms connecting to ${ep.path}.`, {
          hint: 'The engine may be busy or hung; try again, or restart it.',
          details: { pipe: ep.name },
        }));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (err.code === 'EACCES' || err.code === 'EPERM') {
          reject(controlAccessDenied(`Access to ${ep.path} was denied.`, { pipe: ep.name, errno: err.code }, err));
        } else {
          // ENOENT (no socket/pipe), ECONNREFUSED (stale socket), ENOTSOCK...: nobody is serving.
          reject(notRunning(ep, err));
        }
      });
    });
    const client = new ControlClient(socket, ep, opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS);
    if (!opts.skipHello) {
      try {
        client.hello = await client.call('hello', {
          protocol: PROTOCOL_VERSION,
          client: opts.clientName ?? `retroflect-cli/${VERSION}`,
          ...readToken(opts.tokenPath ?? ep.tokenPath),
        });
      } catch (err) {
        client.close();
        throw err;
      }
    }
    return client;
  }

  /** Call a method; resolves with its result, rejects with the server's error as a RetroflectError. */
  call<M extends MethodName>(method: M, params?: Record<string, unknown>): Promise<MethodResults[M]>;
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RetroflectError(ErrorCode.TIMEOUT, `The engine did not answer '${method}' within ${this.callTimeoutMs} ms.`, {
          hint: 'The engine may be busy or hung; check it with retroflect status.',
          details: { method },
        }));
      }, this.callTimeoutMs);
      this.pending.set(id, { resolve, reject, timer, method });
      this.socket.write(JSON.stringify({ id, method, params }) + '\n');
    });
  }

  /** Receive server notifications (e.g. `stats` after subscribe). Returns an unsubscribe function. */
  onNotification(fn: (n: Notification) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Resolves when the server closes the connection. */
  closed(): Promise<void> {
    return this.socket.closed ? Promise.resolve() : new Promise((resolve) => this.socket.once('close', () => resolve()));
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_REPLY_BYTES) {
      this.closedError = new RetroflectError(ErrorCode.INTERNAL, 'The engine sent a reply larger than the client accepts.');
      this.socket.destroy();
      return;
    }
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) !== -1) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      if (line.trim() === '') continue;
      let msg: { id?: unknown; result?: unknown; error?: WireError; method?: string; params?: unknown };
      try {
        msg = JSON.parse(line);
      } catch {
        continue; // not ours to fix; the pending call will time out
      }
      if (msg.id === undefined && typeof msg.method === 'string') {
        for (const fn of this.listeners) fn({ method: msg.method, params: msg.params });
        continue;
      }
      if (msg.id === null && msg.error) {
        // Connection-level error (refused peer, line too long): fail every pending call with it.
        this.closedError = fromWire(msg.error);
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.reject(this.closedError);
        }
        this.pending.clear();
        continue;
      }
      const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
      if (!p) continue;
      this.pending.delete(msg.id as number);
      clearTimeout(p.timer);
      if (msg.error) p.reject(fromWire(msg.error));
      else p.resolve(msg.result);
    }
  }
}

/** The access token, when the file exists and we may read it (Windows: only elevated users can). */
function readToken(path: string): { token?: string } {
  try {
    return { token: readFileSync(path, 'utf8').trim() };
  } catch {
    return {};
  }
}
