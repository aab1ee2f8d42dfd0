/**
 * NFLOG: the kernel's netfilter packet log, read over netlink (linux/netfilter/nfnetlink_log.h). The TUN backend's
 * nft rules drop shielded and forged-source packets before they can reach the TUN device (nftables.ts), so the
 * data plane never sees them; their `log group N` statements hand a copy to whoever listens on group N, and this
 * module is that listener, so a capture can show those drops like any other verdict.
 *
 * Who does what:
 *  - Host half (main thread): `openFirewallLog` opens one netlink socket and finds a free log group (binding and
 *    unbinding it); the nft rules name that group.
 *  - Worker half: `FirewallLogReader` binds the group while at least one capture runs and unbinds it when the last
 *    one ends. Unbound, the kernel's log statement finds no listener and copies nothing: no capture, no cost.
 *    Closing the socket (or the process dying) frees the group.
 *
 * Wire format (all netlink messages are 4-byte aligned; nfnetlink fields are big-endian, netlink's own host-order):
 *   nlmsghdr   u32 length, u16 type, u16 flags, u32 seq, u32 portid            (16 bytes)
 *   nfgenmsg   u8 family, u8 version (0), be16 resource id = the log group     (4 bytes)
 *   attributes u16 length (header included), u16 type, payload, padding to 4
 */
import { readFileSync } from 'node:fs';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { AF_NETLINK, EAGAIN, EINTR, ENOBUFS, libc, NETLINK_NETFILTER, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW } from './libc.ts';

/** nfnetlink subsystem of the log, and its two message types. */
const NFNL_SUBSYS_ULOG = 4;
const NFULNL_MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | 0;
const NFULNL_MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | 1;
/** netlink message types and flags (linux/netlink.h). */
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLMSG_HDR = 16;
const NFGENMSG = 4;
/** Attribute type bits above these are flags (NLA_F_NESTED, NLA_F_NET_BYTEORDER). */
const NLA_TYPE_MASK = 0x3fff;

/** Config attributes and commands. */
const NFULA_CFG_CMD = 1;
const NFULA_CFG_MODE = 2;
const NFULA_CFG_TIMEOUT = 4;
const NFULA_CFG_QTHRESH = 5;
const NFULNL_CFG_CMD_BIND = 1;
const NFULNL_CFG_CMD_UNBIND = 2;
const NFULNL_COPY_PACKET = 2;
/** Packet attributes. */
const NFULA_TIMESTAMP = 3;
const NFULA_IFINDEX_INDEV = 4;
const NFULA_PAYLOAD = 9;
const NFULA_PREFIX = 10;

/** errno values the kernel answers a bind with when the group is taken: another socket holds it (EPERM), or we do. */
const EPERM = 1;
const EBUSY = 16;

/**
 * Log groups we try, from this one up. Groups are per network namespace and the nft rules name the group, so the
 * number only has to be free in this namespace; 0x5246 ("RF") just keeps clear of the small numbers others use.
 */
export const FIRST_LOG_GROUP = 0x5246;
const GROUPS_TO_TRY = 32;

/** Bytes of each dropped packet the kernel copies to us: all of it (a capture's own snap length cuts later). */
const COPY_RANGE = 0xffff;

const align4 = (n: number): number => (n + 3) & ~3;

function attribute(type: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(align4(4 + payload.length));
  out.writeUInt16LE(4 + payload.length, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, 4);
  return out;
}

function be32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0, 0);
  return b;
}

/** One NFULNL_MSG_CONFIG request for `group`, asking for an acknowledgement. */
export function configMessage(group: number, seq: number, attributes: Buffer[]): Buffer {
  const body = Buffer.concat(attributes);
  const msg = Buffer.alloc(NLMSG_HDR + NFGENMSG + body.length);
  msg.writeUInt32LE(msg.length, 0);
  msg.writeUInt16LE(NFULNL_MSG_CONFIG, 4);
  msg.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK, 6);
  msg.writeUInt32LE(seq >>> 0, 8);
  msg.writeUInt32LE(0, 12); // to the kernel
  msg.writeUInt8(0, 16); // AF_UNSPEC: the group serves every family
  msg.writeUInt8(0, 17); // NFNETLINK_V0
  msg.writeUInt16BE(group, 18);
  body.copy(msg, NLMSG_HDR + NFGENMSG);
  return msg;
}

export const bindCommand = (): Buffer => attribute(NFULA_CFG_CMD, Buffer.from([NFULNL_CFG_CMD_BIND]));
export const unbindCommand = (): Buffer => attribute(NFULA_CFG_CMD, Buffer.from([NFULNL_CFG_CMD_UNBIND]));
/** Copy whole packets; send each one at once (queue threshold 1, flush timeout 1/100 s), so a live trace is live. */
export function deliveryOptions(): Buffer[] {
  const mode = Buffer.alloc(6); // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
  mode.writeUInt32BE(COPY_RANGE, 0);
  mode.writeUInt8(NFULNL_COPY_PACKET, 4);
  return [attribute(NFULA_CFG_MODE, mode), attribute(NFULA_CFG_QTHRESH, be32(1)), attribute(NFULA_CFG_TIMEOUT, be32(1))];
}

/**
 * The kernel's answer to request `seq` in `buf[0, len)`: 0 for success, a positive errno for a refusal, or null when
 * `buf` holds no answer to it.
 */
export function ackResult(buf: Buffer, len: number, seq: number): number | null {
  for (let off = 0; off + NLMSG_HDR <= len; ) {
    const mlen = buf.readUInt32LE(off);
    if (mlen < NLMSG_HDR || off + mlen > len) break;
    if (buf.readUInt16LE(off + 4) === NLMSG_ERROR && buf.readUInt32LE(off + 8) === seq >>> 0 && mlen >= NLMSG_HDR + 4) {
      return 0 - buf.readInt32LE(off + NLMSG_HDR); // the kernel sends -errno (0 - x: never -0)
    }
    off += align4(mlen);
  }
  return null;
}

/**
 * Called per logged packet: its IP bytes are `buf[off, off + len)`; `prefix` indexes the reader's prefix list;
 * `ifIndex` is the interface it arrived on (0: the kernel did not say).
 */
export type LoggedPacketSink = (buf: Buffer, off: number, len: number, prefix: number, ifIndex: number, timeMs: number) => void;

/**
 * Every NFULNL_MSG_PACKET in `buf[0, len)`: hands its payload to `sink` with the index of its log prefix in
 * `prefixes` (packets with another prefix, or none, are skipped). Garbage ends the walk; nothing is thrown.
 * `now` stands in for the time when the kernel sent no timestamp. Returns the number of packets handed over.
 */
export function forEachLoggedPacket(buf: Buffer, len: number, prefixes: readonly Buffer[], now: number, sink: LoggedPacketSink): number {
  let handed = 0;
  for (let off = 0; off + NLMSG_HDR <= len; ) {
    const mlen = buf.readUInt32LE(off);
    if (mlen < NLMSG_HDR || off + mlen > len) break;
    if (buf.readUInt16LE(off + 4) === NFULNL_MSG_PACKET) {
      let payload = -1;
      let payloadLen = 0;
      let prefix = -1;
      let ifIndex = 0;
      let time = now;
      const end = off + mlen;
      for (let a = off + NLMSG_HDR + NFGENMSG; a + 4 <= end; ) {
        const alen = buf.readUInt16LE(a);
        if (alen < 4 || a + alen > end) break;
        const type = buf.readUInt16LE(a + 2) & NLA_TYPE_MASK;
        if (type === NFULA_PAYLOAD) {
          payload = a + 4;
          payloadLen = alen - 4;
        } else if (type === NFULA_PREFIX) {
          prefix = matchPrefix(buf, a + 4, alen - 4, prefixes);
        } else if (type === NFULA_IFINDEX_INDEV && alen >= 4 + 4) {
          ifIndex = buf.readUInt32BE(a + 4);
        } else if (type === NFULA_TIMESTAMP && alen >= 4 + 16) {
          // struct nfulnl_msg_packet_timestamp { __be64 sec; __be64 usec; }
          const sec = buf.readUInt32BE(a + 4) * 2 ** 32 + buf.readUInt32BE(a + 8);
          const usec = buf.readUInt32BE(a + 16);
          time = sec * 1000 + usec / 1000;
        }
        a += align4(alen);
      }
      if (payload >= 0 && prefix >= 0) {
        sink(buf, payload, payloadLen, prefix, ifIndex, time);
        handed++;
      }
    }
    off += align4(mlen);
  }
  return handed;
}

/** Index of the NUL-terminated prefix at `buf[off, off + len)` in `prefixes`, or -1. */
function matchPrefix(buf: Buffer, off: number, len: number, prefixes: readonly Buffer[]): number {
  let n = 0;
  while (n < len && buf[off + n] !== 0) n++;
  for (let i = 0; i < prefixes.length; i++) {
    const p = prefixes[i];
    if (p.length !== n) continue;
    let k = 0;
    while (k < n && p[k] === buf[off + k]) k++;
    if (k === n) return i;
  }
  return -1;
}

/** A netlink socket to the log, bound to this process (the kernel picks the port id). */
function openSocket(): number {
  const c = libc();
  const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) throw logError(`socket(AF_NETLINK, NETLINK_NETFILTER) failed: ${c.strerror(c.errno())}`);
  const addr = Buffer.alloc(12); // struct sockaddr_nl { u16 family; u16 pad; u32 portid (0: kernel picks); u32 groups; }
  addr.writeUInt16LE(AF_NETLINK, 0);
  if (c.bind(fd, addr, addr.length) < 0) {
    const errno = c.errno();
    c.close(fd);
    throw logError(`binding the netlink socket failed: ${c.strerror(errno)}`);
  }
  return fd;
}

/** The netlink port id the kernel gave socket `fd` (nl_pid of its sockaddr_nl); -1 when it cannot be read. */
export function netlinkPortId(fd: number): number {
  const addr = Buffer.alloc(12);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(addr.length, 0);
  return libc().getsockname(fd, addr, len) < 0 ? -1 : addr.readUInt32LE(4);
}

/** Lists every bound log group of this network namespace: group, listener's port id, queue length, ... */
const GROUP_LIST = '/proc/net/netfilter/nfnetlink_log';

/** The netlink port id of whoever listens on log group `group` in this namespace now (null: nobody, or unknown). */
export function groupListener(group: number): number | null {
  let text: string;
  try {
    text = readFileSync(GROUP_LIST, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const [g, portId] = line.trim().split(/\s+/).map(Number);
    if (g === group && Number.isInteger(portId)) return portId;
  }
  return null;
}

/**
 * What an admin should know about log group `group`, which our socket (`ownPortId`) found free at start: null when
 * it is still ours to take (nobody bound, or we are), else a sentence naming the other listener.
 */
export function groupTakenBy(group: number, ownPortId: number): string | null {
  const holder = groupListener(group);
  if (holder === null || holder === ownPortId) return null;
  return (
    `NFLOG group ${group} was taken by another program (netlink port id ${holder}); ` +
    'captures miss firewall drops until it lets go or the engine restarts'
  );
}

function logError(message: string): RetroflectError {
  return new RetroflectError(ErrorCode.BACKEND_FAILED, `The netfilter log (NFLOG) is not usable: ${message}.`, {
    hint: 'Captures will not show packets the shield rules drop; everything else works. The kernel needs nfnetlink_log (CONFIG_NETFILTER_NETLINK_LOG).',
  });
}

/** One config request and its answer, on a non-blocking socket (the kernel answers within the send). */
function request(fd: number, group: number, seq: number, attributes: Buffer[], scratch: Buffer): number {
  const c = libc();
  const msg = configMessage(group, seq, attributes);
  if (c.write(fd, msg, msg.length) < 0) return c.errno();
  for (;;) {
    const got = c.read(fd, scratch, scratch.length);
    if (got < 0) {
      const errno = c.errno();
      if (errno === EINTR || errno === ENOBUFS) continue; // ENOBUFS: logged packets were lost, the answer may follow
      return errno === EAGAIN ? EAGAIN : errno;
    }
    const result = ackResult(scratch, got, seq);
    if (result !== null) return result;
  }
}

/**
 * Host half: open the log socket and find a free group (bound then unbound here, so nothing is logged until a
 * capture starts). Throws a RetroflectError when the kernel has no usable NFLOG.
 */
export function openFirewallLog(): { fd: number; group: number } {
  const fd = openSocket();
  const scratch = Buffer.alloc(4096);
  const c = libc();
  for (let i = 0; i < GROUPS_TO_TRY; i++) {
    const group = FIRST_LOG_GROUP + i;
    const bound = request(fd, group, i * 2 + 1, [bindCommand()], scratch);
    if (bound === EPERM || bound === EBUSY) continue; // another listener has this group
    if (bound !== 0) {
      c.close(fd);
      throw logError(`binding log group ${group} failed: ${c.strerror(bound)}`);
    }
    request(fd, group, i * 2 + 2, [unbindCommand()], scratch);
    return { fd, group };
  }
  c.close(fd);
  throw logError(`log groups ${FIRST_LOG_GROUP} to ${FIRST_LOG_GROUP + GROUPS_TO_TRY - 1} are all in use`);
}

/** Bytes read per read(): one netlink datagram at most, and a whole 64 KiB packet fits with its attributes. */
const READ_BUFFER = 256 * 1024;

/**
 * Worker half: binds the group while captures run, and hands each logged packet to a sink. Allocates nothing per
 * packet (one read buffer, reused).
 */
export class FirewallLogReader {
  /** Messages the kernel could not queue for us (the socket was full): the records those packets would have made. */
  lost = 0;
  private bound = false;
  private seq = 1_000_000;
  private readonly buf = Buffer.alloc(READ_BUFFER);
  private readonly prefixes: Buffer[];

  constructor(
    readonly fd: number,
    readonly group: number,
    prefixes: readonly string[],
  ) {
    this.prefixes = prefixes.map((p) => Buffer.from(p));
  }

  get listening(): boolean {
    return this.bound;
  }

  /** Start receiving the group's packets. Throws a RetroflectError when the group cannot be bound. */
  start(): void {
    if (this.bound) return;
    const result = request(this.fd, this.group, ++this.seq, [bindCommand(), ...deliveryOptions()], this.buf);
    if (result !== 0) {
      const taken = groupTakenBy(this.group, netlinkPortId(this.fd));
      const message = taken ? `${taken}.` : `Listening on NFLOG group ${this.group} failed: ${libc().strerror(result)}.`;
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, message, {
        hint: 'Captures will not show packets the shield rules drop. Another program may have taken the group; restart the engine to pick a free one.',
        details: { group: this.group, errno: result },
      });
    }
    this.bound = true;
  }

  /** Stop receiving; packets still queued are discarded. */
  stop(): void {
    if (!this.bound) return;
    this.bound = false;
    request(this.fd, this.group, ++this.seq, [unbindCommand()], this.buf);
    while (libc().read(this.fd, this.buf, this.buf.length) > 0);
  }

  /**
   * Read what is queued now, at most `maxReads` datagrams (never waits), and hand each packet to `sink`. Returns the
   * packets handed over. The bound keeps a flood of logged drops from holding the caller: the rest waits for its
   * next pass (or is lost to the kernel's full queue, and counted in `lost`).
   */
  drain(sink: LoggedPacketSink, maxReads: number): number {
    const c = libc();
    let handed = 0;
    for (let reads = 0; reads < maxReads; reads++) {
      const got = c.read(this.fd, this.buf, this.buf.length);
      if (got < 0) {
        const errno = c.errno();
        if (errno === ENOBUFS) {
          this.lost++;
          continue;
        }
        if (errno === EINTR) continue;
        return handed; // EAGAIN: empty (anything else: the socket is gone, and the engine goes on without it)
      }
      if (got === 0) return handed;
      handed += forEachLoggedPacket(this.buf, got, this.prefixes, Date.now(), sink);
    }
    return handed;
  }
}
