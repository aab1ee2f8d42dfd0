/**
 * The engine's control server: newline-delimited JSON over a Windows named pipe or a Linux Unix socket
 * (docs/protocol.md). One `Connection` per client; requests of a connection run in order, connections are
 * independent, and nothing a client does (garbage, huge lines, not reading, vanishing) affects the engine or other
 * clients. Changes are applied to the engine and then persisted through the ConfigStore; a failed save undoes
 * the engine change.
 */
import net from 'node:net';
import { chmodSync, lstatSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { InterceptConfig, ShieldPort } from '../config/intercept-config.ts';
import { ConfigStore } from '../config/config-file.ts';
import type { ChangeResult, EngineStats, EngineStatus, FlowRecord } from '../engine/types.ts';
import { ErrorCode, RetroflectError, isRetroflectError } from '../errors.ts';
import { resolveEndpoint, type ControlEndpoint } from './pipe-path.ts';
import { isAllowedPeer, peerCredentials } from './peer-credentials.ts';
import { MethodHandlers, type AddressValidator } from './handlers.ts';
import {
  FIRST_REQUEST_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  MAX_CONNECTIONS,
  MAX_ID_CHARS,
  MAX_LINE_BYTES,
  MAX_PENDING_REQUESTS,
  MAX_UNSENT_BYTES,
  MAX_UNSENT_NOTIFY_BYTES,
  type AuthMode,
  type Reply,
  type RequestId,
} from './protocol.ts';
import { ControlClient, isServerError } from './client.ts';
import { restrictWindowsDirectory } from './windows-acl.ts';
import { timingSafeEqual } from 'node:crypto';

/** What the control plane needs from the engine (structurally matches engine/engine.ts `Engine`). */
export interface ControlEngine {
  status(): EngineStatus;
  config(): InterceptConfig;
  addAddresses(addrs: readonly string[]): Promise<ChangeResult<string> & { warnings?: string[] }>;
  removeAddresses(addrs: readonly string[]): Promise<string[]>;
  addShieldPorts(ports: readonly ShieldPort[]): Promise<ChangeResult<ShieldPort>>;
  removeShieldPorts(ports: readonly ShieldPort[]): Promise<ShieldPort[]>;
  stats(): Promise<EngineStats>;
  flows(): FlowRecord[];
  stop(): Promise<void>;
}

export interface ControlServerOptions {
  engine: ControlEngine;
  /** Pipe name or (Linux) absolute socket path; default `retroflect` / env RETROFLECT_PIPE. */
  pipeName?: string;
  /** The persisted config. Give either this or `configPath` (null = no file: every change is in memory only). */
  configStore?: ConfigStore;
  configPath?: string | null;
  log?: (message: string) => void;
  /** Default: 'token' on Windows, 'peer-credentials' elsewhere. Tests run token mode on Linux too. */
  auth?: AuthMode;
  /** Host validation for address.test (default: platform/validate-address.ts). */
  validateAddress?: AddressValidator;
  /** Timeouts, shortened by tests. */
  firstRequestTimeoutMs?: number;
  idleTimeoutMs?: number;
}

export interface ControlServer {
  readonly endpoint: ControlEndpoint;
  readonly auth: AuthMode;
  /** Number of open client connections. */
  connectionCount(): number;
  /** Stop listening, close every connection, remove the socket / token file. Idempotent. */
  close(): Promise<void>;
}

function accessDenied(message: string, hint: string, details: Record<string, unknown> = {}): RetroflectError {
  return new RetroflectError(ErrorCode.ACCESS_DENIED, message, { hint, details });
}

/** Is something answering at `path` a retroflect engine? Connects and says hello. */
async function probe(path: string, tokenPath: string): Promise<'engine' | 'other' | 'nothing'> {
  try {
    const c = await ControlClient.connect({ pipe: path, tokenPath, timeoutMs: 1500, callTimeoutMs: 1500, clientName: 'retroflect-probe' });
    c.close();
    return 'engine';
  } catch (err) {
    if (isRetroflectError(err) && err.code === ErrorCode.ENGINE_NOT_RUNNING) return 'nothing';
    // Answered hello with an error (e.g. access denied to our token) → still an engine.
    if (isServerError(err)) return 'engine';
    return 'other';
  }
}

/**
 * Linux: make sure the socket's directory is ours and private, and that the socket path is free or a stale socket
 * of ours. Never follows symlinks and never removes anything we did not create.
 */
async function prepareUnixPath(ep: ControlEndpoint): Promise<void> {
  const uid = process.geteuid?.() ?? 0;
  const dir = dirname(ep.path);
  let st;
  try {
    st = lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(dir, { mode: 0o700 }); // one level only: the parent (/run) must exist
    st = lstatSync(dir);
  }
  if (!st.isDirectory() || st.isSymbolicLink() || st.uid !== uid || (st.mode & 0o777) !== 0o700) {
    throw accessDenied(
      `Refusing to serve the control socket in ${dir}: it must be a real directory owned by uid ${uid} with mode 0700 (it is ${st.isSymbolicLink() ? 'a symlink' : st.isDirectory() ? `owned by uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}` : 'not a directory'}).`,
      `Remove or fix ${dir} (e.g. chmod 700, chown root), or pick another place with --pipe /path/to/dir/name.sock.`,
      { path: dir },
    );
  }
  let sock;
  try {
    sock = lstatSync(ep.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!sock.isSocket() || sock.uid !== uid) {
    throw accessDenied(
      `Refusing to use ${ep.path}: it exists and is ${sock.isSocket() ? `a socket owned by uid ${sock.uid}` : 'not a socket'}.`,
      `Remove ${ep.path} if it is left over, or choose another --pipe.`,
      { path: ep.path },
    );
  }
  const who = await probe(ep.path, ep.tokenPath);
  if (who === 'engine') {
    throw new RetroflectError(ErrorCode.ALREADY_RUNNING, `A retroflect engine is already serving ${ep.path}.`, {
      hint: "Use the running engine (retroflect status), stop it with 'retroflect stop', or start this one with another --pipe.",
      details: { pipe: ep.name },
    });
  }
  if (who === 'other') {
    throw accessDenied(`Something that is not a retroflect engine is listening on ${ep.path}.`, 'Stop it or choose another --pipe.', {
      path: ep.path,
    });
  }
  unlinkSync(ep.path); // stale socket of ours, left by a killed run
}

function writeToken(ep: ControlEndpoint): string {
  const token = randomBytes(32).toString('hex');
  // 'w' with mode 0600: on POSIX only the owner reads it; on Windows the file inherits the directory ACL.
  writeFileSync(ep.tokenPath, token + '\n', { mode: 0o600 });
  if (process.platform !== 'win32') chmodSync(ep.tokenPath, 0o600);
  return token;
}

function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  const log = opts.log ?? (() => undefined);
  const ep = resolveEndpoint(opts.pipeName);
  const auth: AuthMode = opts.auth ?? (process.platform === 'win32' ? 'token' : 'peer-credentials');
  const store = opts.configStore ?? (opts.configPath ? ConfigStore.open(opts.configPath) : ConfigStore.inMemory());
  const handlers = new MethodHandlers(opts.engine, store, opts.validateAddress);
  const connections = new Set<Connection>();
  let token: string | null = null;
  let closed = false;

  if (process.platform === 'win32') {
    await restrictWindowsDirectory(dirname(ep.tokenPath));
  } else {
    await prepareUnixPath(ep);
  }

  const ctx: ServerContext = {
    auth,
    handlers,
    log,
    checkToken: (t) => token !== null && typeof t === 'string' && tokensEqual(t, token),
    firstRequestTimeoutMs: opts.firstRequestTimeoutMs ?? FIRST_REQUEST_TIMEOUT_MS,
    idleTimeoutMs: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
    requestStop: () => {
      void opts.engine.stop().catch((err) => log(`control: stop failed: ${(err as Error).message}`));
    },
  };

  const server = net.createServer({ pauseOnConnect: false }, (socket) => {
    if (closed) return void socket.destroy();
    const conn = new Connection(socket, ctx);
    connections.add(conn);
    socket.once('close', () => {
      connections.delete(conn);
      conn.dispose();
    });
  });
  server.maxConnections = MAX_CONNECTIONS;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(ep.path);
  }).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code === 'EADDRINUSE') {
      // Windows: the pipe name exists (libuv creates the first instance with FILE_FLAG_FIRST_PIPE_INSTANCE).
      if ((await probe(ep.path, ep.tokenPath)) === 'engine') {
        throw new RetroflectError(ErrorCode.ALREADY_RUNNING, `A retroflect engine is already serving ${ep.path}.`, {
          hint: "Use the running engine (retroflect status), stop it with 'retroflect stop', or start this one with another --pipe.",
          details: { pipe: ep.name },
        });
      }
      throw accessDenied(`Another program already owns ${ep.path}.`, 'Stop it or choose another --pipe.', { path: ep.path });
    }
    throw new RetroflectError(ErrorCode.INTERNAL, `Cannot listen on ${ep.path}: ${err.message}`, { details: { path: ep.path, errno: err.code }, cause: err });
  });
  if (process.platform !== 'win32') chmodSync(ep.path, 0o600);
  if (auth === 'token') token = writeToken(ep);
  log(`control: listening on ${ep.path} (auth: ${auth})`);

  return {
    endpoint: ep,
    auth,
    connectionCount: () => connections.size,
    close: async () => {
      if (closed) return;
      closed = true;
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const c of connections) c.destroy();
      await done;
      if (token !== null) {
        try {
          unlinkSync(ep.tokenPath);
        } catch {
          /* already gone */
        }
      }
      // Node removes the Unix socket file itself when the server closes.
    },
  };
}

interface ServerContext {
  auth: AuthMode;
  handlers: MethodHandlers;
  log: (message: string) => void;
  checkToken: (token: unknown) => boolean;
  firstRequestTimeoutMs: number;
  idleTimeoutMs: number;
  requestStop: () => void;
}

/** Decodes UTF-8 strictly: a request with invalid bytes is refused, not silently repaired. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

class Connection {
  private readonly socket: net.Socket;
  private readonly ctx: ServerContext;
  /** Bytes of the line being received (no newline yet). */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private readonly queue: string[] = [];
  private working = false;
  private gotFirstLine = false;
  private authenticated: boolean;
  private closing = false;
  private firstTimer: NodeJS.Timeout | null;
  private statsTimer: NodeJS.Timeout | null = null;
  private statsBusy = false;

  constructor(socket: net.Socket, ctx: ServerContext) {
    this.socket = socket;
    this.ctx = ctx;
    this.authenticated = ctx.auth !== 'token';
    socket.on('error', () => undefined); // resets and EPIPE from vanished clients are normal
    this.firstTimer = setTimeout(() => this.destroy(), ctx.firstRequestTimeoutMs);
    socket.setTimeout(ctx.idleTimeoutMs, () => {
      if (this.statsTimer === null) this.destroy();
    });
    if (ctx.auth === 'peer-credentials') {
      const cred = peerCredentials(socket);
      if (!isAllowedPeer(cred)) {
        ctx.log(`control: refused a client (uid ${cred?.uid ?? 'unknown'}, pid ${cred?.pid ?? 'unknown'})`);
        this.send({
          id: null,
          error: accessDenied('Only root may control the retroflect engine.', 'Run the command as root (sudo).', { uid: cred?.uid ?? null }).toJSON(),
        });
        this.end();
        return;
      }
    }
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      if (this.partialBytes + (end - start) > MAX_LINE_BYTES) {
        this.send({ id: null, error: { code: ErrorCode.BAD_REQUEST, message: `Request line longer than ${MAX_LINE_BYTES} bytes; closing the connection.`, hint: 'Send one JSON object per line, each at most 64 KiB.' } });
        this.end();
        return;
      }
      if (end > start) {
        this.partial.push(chunk.subarray(start, end));
        this.partialBytes += end - start;
      }
      if (nl === -1) break;
      const line = this.partial.length === 1 ? this.partial[0] : Buffer.concat(this.partial, this.partialBytes);
      this.partial = [];
      this.partialBytes = 0;
      start = nl + 1;
      this.onLine(line);
    }
    if (this.queue.length >= MAX_PENDING_REQUESTS) this.socket.pause();
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

  private enqueue(text: string): void {
    this.queue.push(text);
    if (!this.working) void this.work();
  }

  /** Handle queued lines one at a time, in order; wait for the client to read when too much is unsent. */
  private async work(): Promise<void> {
    this.working = true;
    try {
      while (this.queue.length > 0 && !this.closing) {
        const text = this.queue.shift()!;
        const reply = await this.handleLine(text);
        if (reply) this.send(reply);
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
        if (this.queue.length < MAX_PENDING_REQUESTS / 2 && this.socket.isPaused()) this.socket.resume();
      }
    } finally {
      this.working = false;
    }
  }

  private async handleLine(text: string): Promise<Reply | null> {
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
    const method = req.method;
    try {
      if (method === 'hello') {
        const result = this.ctx.handlers.hello(params as Record<string, unknown>, this.ctx.auth);
        if (this.ctx.auth === 'token') {
          if (!this.ctx.checkToken((params as Record<string, unknown>).token)) {
            this.closeAfterReply();
            throw accessDenied(
              'The access token is missing or wrong.',
              'Run the client as Administrator: it reads the token from %ProgramData%\\Retroflect\\<pipe>.token.',
            );
          }
          this.authenticated = true;
        }
        return { id: rid, result };
      }
      if (!this.authenticated) {
        throw accessDenied("Say 'hello' with the access token first.", 'Send {"method":"hello","params":{"protocol":1,"token":"..."}} as the first request.');
      }
      switch (method) {
        case 'subscribe':
          return { id: rid, result: this.subscribe(params as Record<string, unknown>) };
        case 'unsubscribe':
          this.ctx.handlers.checkUnsubscribe(params as Record<string, unknown>);
          this.stopStats();
          return { id: rid, result: { topic: 'stats', subscribed: false } };
        case 'stop': {
          this.ctx.handlers.checkNoParams(params as Record<string, unknown>);
          // Reply first, then stop: the engine's 'stopped' event closes the server and every connection.
          this.socket.write(JSON.stringify({ id: rid, result: { stopping: true } }) + '\n', () => this.ctx.requestStop());
          return null;
        }
        default:
          return { id: rid, result: await this.ctx.handlers.call(method, params as Record<string, unknown>) };
      }
    } catch (err) {
      return { id: rid, error: toWireError(err) };
    }
  }

  private subscribe(params: Record<string, unknown>): { topic: 'stats'; intervalMs: number } {
    const intervalMs = this.ctx.handlers.checkSubscribe(params);
    this.stopStats();
    this.statsTimer = setInterval(() => void this.pushStats(), intervalMs);
    return { topic: 'stats', intervalMs };
  }

  private async pushStats(): Promise<void> {
    // Skip (not queue) a sample while the subscriber is behind or the previous sample is still being taken.
    if (this.statsBusy || this.closing || this.socket.writableLength > MAX_UNSENT_NOTIFY_BYTES) return;
    this.statsBusy = true;
    try {
      const stats = await this.ctx.handlers.call('stats', {});
      if (!this.closing && this.statsTimer !== null) this.socket.write(JSON.stringify({ method: 'stats', params: stats }) + '\n');
    } catch {
      /* engine stopping: the connection closes soon */
    } finally {
      this.statsBusy = false;
    }
  }

  private stopStats(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = null;
  }

  private send(reply: Reply): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.write(JSON.stringify(reply) + '\n');
  }

  private closeAfterReply(): void {
    this.closing = true;
    setImmediate(() => this.end());
  }

  private end(): void {
    this.closing = true;
    this.socket.pause();
    this.socket.end();
    // A client that never reads would keep a half-closed socket forever.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }

  dispose(): void {
    this.closing = true;
    this.stopStats();
    if (this.firstTimer) clearTimeout(this.firstTimer);
    this.firstTimer = null;
    this.queue.length = 0;
  }
}

function badRequest(id: RequestId | null, message: string): Reply {
  return { id, error: { code: ErrorCode.BAD_REQUEST, message, hint: 'Send one JSON object per line: {"id": 1, "method": "status", "params": {}}.' } };
}

function toWireError(err: unknown): RetroflectError['toJSON'] extends () => infer R ? R : never {
  if (isRetroflectError(err)) return err.toJSON();
  return { code: ErrorCode.INTERNAL, message: `Internal error: ${(err as Error)?.message ?? String(err)}`, hint: 'This is a bug; please report it with the engine log.' };
}
