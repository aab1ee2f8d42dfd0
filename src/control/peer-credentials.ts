/**
 * Linux: who is on the other end of an accepted Unix socket, from the kernel (getsockopt SO_PEERCRED through koffi).
 * The kernel records the peer's pid/uid/gid at connect() time; a client cannot forge them. They decide access and
 * name the client in the log (event 1100).
 */
import type { Socket } from 'node:net';
import koffi from 'koffi';
import { userNames } from '../platform/linux/accounts.ts';
import { processName } from '../platform/linux/socket-owners.ts';
import type { PipeClient } from '../engine/types.ts';

/** <asm-generic/socket.h>: SOL_SOCKET level and the SO_PEERCRED option (x86-64 and arm64 share these values). */
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
/** struct ucred { pid_t pid; uid_t uid; gid_t gid; } — three 32-bit ints. */
const UCRED_SIZE = 12;

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

type GetSockOpt = (fd: number, level: number, name: number, val: Buffer, len: Buffer) => number;
let getsockopt: GetSockOpt | null | undefined;

function loadGetsockopt(): GetSockOpt | null {
  if (getsockopt !== undefined) return getsockopt;
  try {
    const libc = koffi.load('libc.so.6');
    getsockopt = libc.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)') as GetSockOpt;
  } catch {
    getsockopt = null;
  }
  return getsockopt;
}

/** The file descriptor behind a connected Node socket (libuv's pipe handle), or -1. */
function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: number } })._handle;
  return typeof handle?.fd === 'number' ? handle.fd : -1;
}

/** The peer's credentials, or null when they cannot be read (not Linux, no fd, call failed): callers fail closed. */
export function peerCredentials(socket: Socket): PeerCredentials | null {
  if (process.platform !== 'linux') return null;
  const fn = loadGetsockopt();
  const fd = socketFd(socket);
  if (!fn || fd < 0) return null;
  const val = Buffer.alloc(UCRED_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(UCRED_SIZE, 0);
  if (fn(fd, SOL_SOCKET, SO_PEERCRED, val, len) !== 0) return null;
  if (len.readUInt32LE(0) < UCRED_SIZE) return null;
  return { pid: val.readInt32LE(0), uid: val.readUInt32LE(4), gid: val.readUInt32LE(8) };
}

/** Root, or the user the engine runs as, may control it. */
export function isAllowedPeer(cred: PeerCredentials | null, ownUid: number = process.geteuid?.() ?? -1): boolean {
  return cred !== null && (cred.uid === 0 || cred.uid === ownUid);
}

/** The peer as the log names it: pid, uid with its user name, process name (read now: the client is still there). */
export function describePeer(cred: PeerCredentials): PipeClient {
  return { pid: cred.pid, uid: cred.uid, user: userNames()(cred.uid), process: processName(cred.pid) };
}
