/**
 * Listening on the control endpoint (its address: endpoint-address.ts), and who may connect. Linux: a Unix socket in a private directory
 * (owned by us, mode 0700; never follows symlinks, removes only a stale socket of ours). Windows: a named pipe plus
 * a token file in an Administrators-only directory. Before taking a path it probes what answers there, so a second
 * engine is refused instead of stealing the first one's endpoint.
 */
import { connect, type Server } from 'node:net';
import { chmodSync, lstatSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { accessDenied, alreadyServing } from '../error-messages.ts';
import { ErrorCode, RetroflectError, isRetroflectError } from '../errors.ts';
import { ControlClient, isServerError } from './client.ts';
import type { ControlEndpoint } from './endpoint-address.ts';
import { restrictWindowsDirectory } from './windows-acl.ts';

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

/** Does anything accept connections at a Unix socket path? Only ECONNREFUSED (or a vanished file) means no. */
function socketListening(path: string): Promise<'listening' | 'refused' | 'gone'> {
  return new Promise((resolve) => {
    const s = connect(path);
    const timer = setTimeout(() => {
      s.destroy();
      resolve('listening'); // a backlog so full it does not even accept: alive, just busy
    }, 1500);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve('listening');
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'ECONNREFUSED' ? 'refused' : err.code === 'ENOENT' ? 'gone' : 'listening');
    });
  });
}

/**
 * Refuse to go on when an engine already serves this endpoint (E_ALREADY_RUNNING, exit 8) or something else owns
 * it. `retroflect run` calls this before the engine touches the host; startControlServer checks again.
 */
export async function checkEndpointFree(ep: ControlEndpoint): Promise<void> {
  if (process.platform === 'win32') {
    if ((await probe(ep.path, ep.tokenPath)) === 'engine') throw alreadyServing(ep.path, ep.name);
    return;
  }
  await prepareUnixPath(ep);
}

/** Make the endpoint's path ready to listen on (directory rights; a stale socket of ours removed). */
export async function prepareEndpoint(ep: ControlEndpoint): Promise<void> {
  if (process.platform === 'win32') await restrictWindowsDirectory(dirname(ep.tokenPath));
  else await prepareUnixPath(ep);
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
  // Stale means nobody listens: the kernel refuses the connection. A listener that accepts and then closes without a
  // word (as D-Bus does on bad auth), or answers something else, is someone's live socket and is left alone.
  const listening = await socketListening(ep.path);
  if (listening === 'gone') return;
  const who = listening === 'refused' ? 'nothing' : await probe(ep.path, ep.tokenPath);
  if (who === 'engine') throw alreadyServing(ep.path, ep.name);
  if (who !== 'nothing' || listening !== 'refused') {
    throw accessDenied(`Something that is not a retroflect engine is listening on ${ep.path}.`, 'Stop it or choose another --pipe.', {
      path: ep.path,
    });
  }
  unlinkSync(ep.path); // stale socket of ours, left by a killed run
}

/** Listen on the endpoint; a name someone else already holds is refused with the reason. */
export async function listenOn(server: Server, ep: ControlEndpoint): Promise<void> {
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
      if ((await probe(ep.path, ep.tokenPath)) === 'engine') throw alreadyServing(ep.path, ep.name);
      throw accessDenied(`Another program already owns ${ep.path}.`, 'Stop it or choose another --pipe.', { path: ep.path });
    }
    throw new RetroflectError(ErrorCode.INTERNAL, `Cannot listen on ${ep.path}: ${err.message}`, { details: { path: ep.path, errno: err.code }, cause: err });
  });
  if (process.platform !== 'win32') chmodSync(ep.path, 0o600);
}

/** The access token of token mode: written next to the pipe, readable by its owner (Administrators) only. */
export class TokenFile {
  private readonly token: string;

  constructor(private readonly ep: ControlEndpoint) {
    this.token = randomBytes(32).toString('hex');
    // 'w' with mode 0600: on POSIX only the owner reads it; on Windows the file inherits the directory ACL.
    writeFileSync(ep.tokenPath, this.token + '\n', { mode: 0o600 });
    if (process.platform !== 'win32') chmodSync(ep.tokenPath, 0o600);
  }

  matches(candidate: unknown): boolean {
    if (typeof candidate !== 'string') return false;
    const x = Buffer.from(candidate);
    const y = Buffer.from(this.token);
    return x.length === y.length && timingSafeEqual(x, y);
  }

  remove(): void {
    try {
      unlinkSync(this.ep.tokenPath);
    } catch {
      /* already gone */
    }
  }
}
