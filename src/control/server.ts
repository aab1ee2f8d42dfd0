/**
 * The engine's control server (docs/protocol.md): puts together the endpoint (endpoint-address.ts: where it is;
 * endpoint-listen.ts: taking it safely, who may connect), one `Connection` per client (connection.ts: framing,
 * access, subscriptions) and the method handlers (handlers.ts: the method table; changes through config-changes.ts,
 * persisted in the ConfigStore). The host's address rules come in with the options, so the control layer never asks
 * the platform for them.
 */
import net from 'node:net';
import { ConfigStore } from '../config/config-store.ts';
import { Connection } from './connection.ts';
import type { ControlEngine } from './control-engine.ts';
import { listenOn, prepareEndpoint, TokenFile } from './endpoint-listen.ts';
import type { AddressRules } from './address-rules.ts';
import { MethodHandlers } from './handlers.ts';
import { resolveEndpoint, type ControlEndpoint } from './endpoint-address.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { NO_POLICY, type PolicySource } from '../config/policy.ts';
import { PolicyState } from './policy-state.ts';
import { PolicyWatch } from './policy-watch.ts';
import { FIRST_REQUEST_TIMEOUT_MS, IDLE_TIMEOUT_MS, LINE_TIMEOUT_MS, MAX_CONNECTIONS, type AuthMode } from './protocol.ts';

function engineBusy(): RetroflectError {
  return new RetroflectError(ErrorCode.ENGINE_BUSY, `The engine has ${MAX_CONNECTIONS} control connections open, its limit; this one was closed.`, {
    hint: 'Try again shortly. If it stays busy, some program is holding connections open: find it (ss -xp) and stop it.',
  });
}

/** How long a closing server lets each connection send what it still holds before destroying it. */
export const CLOSE_FLUSH_MS = 2000;

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
  /** The host's reflect-address rules: address.add validates with them, address.test reports them. */
  addressRules: AddressRules;
  /** The managed policy (config/policy.ts); none when absent. In force before the server listens. */
  policy?: PolicySource;
  /** Timeouts, shortened by tests. */
  firstRequestTimeoutMs?: number;
  idleTimeoutMs?: number;
  lineTimeoutMs?: number;
}

export interface ControlServer {
  readonly endpoint: ControlEndpoint;
  readonly auth: AuthMode;
  /** Number of open client connections. */
  connectionCount(): number;
  /** Requests read and not yet answered, over all connections (at most MAX_PENDING_REQUESTS + 1 per connection). */
  pendingRequests(): number;
  /**
   * Stop listening, close every connection, remove the socket / token file. Idempotent. Each connection first sends
   * what it still holds (a capture's last records and capture.end) for at most CLOSE_FLUSH_MS, then is destroyed.
   */
  close(): Promise<void>;
}

export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  const log = opts.log ?? (() => undefined);
  const ep = resolveEndpoint(opts.pipeName);
  const auth: AuthMode = opts.auth ?? (process.platform === 'win32' ? 'token' : 'peer-credentials');
  const store = opts.configStore ?? (opts.configPath ? ConfigStore.open(opts.configPath) : ConfigStore.inMemory());
  const policySource = opts.policy ?? NO_POLICY;
  const handlers = new MethodHandlers(opts.engine, store, { addressRules: opts.addressRules, log, policy: new PolicyState(policySource.origin) });
  const policyWatch = new PolicyWatch(policySource, handlers.changes, log);
  await policyWatch.start();
  const connections = new Set<Connection>();
  let token: TokenFile | null = null;
  let closed = false;

  await prepareEndpoint(ep).catch((err: unknown) => {
    policyWatch.stop();
    throw err;
  });
  const server = net.createServer({ pauseOnConnect: false }, (socket) => {
    if (closed) return void socket.destroy();
    if (connections.size >= MAX_CONNECTIONS) {
      // Say why before closing, so the client reports "busy" (exit 10) and not "not running".
      socket.on('error', () => undefined);
      socket.resume(); // read (and drop) what it sends, so its close is seen
      socket.end(JSON.stringify({ id: null, error: engineBusy().toJSON() }) + '\n');
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    const conn = new Connection(socket, {
      auth,
      handlers,
      log,
      checkToken: (t) => token !== null && token.matches(t),
      firstRequestTimeoutMs: opts.firstRequestTimeoutMs ?? FIRST_REQUEST_TIMEOUT_MS,
      idleTimeoutMs: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
      lineTimeoutMs: opts.lineTimeoutMs ?? LINE_TIMEOUT_MS,
    });
    connections.add(conn);
    socket.once('close', () => {
      connections.delete(conn);
      conn.dispose();
    });
  });
  await listenOn(server, ep).catch((err: unknown) => {
    policyWatch.stop();
    throw err;
  });
  if (auth === 'token') token = new TokenFile(ep);
  log(`control: listening on ${ep.path} (auth: ${auth})`);

  return {
    endpoint: ep,
    auth,
    connectionCount: () => connections.size,
    pendingRequests: () => [...connections].reduce((sum, c) => sum + c.pendingRequests, 0),
    close: async () => {
      if (closed) return;
      closed = true;
      policyWatch.stop();
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const c of connections) c.finish(CLOSE_FLUSH_MS);
      await done;
      token?.remove();
      // Node removes the Unix socket file itself when the server closes.
    },
  };
}
