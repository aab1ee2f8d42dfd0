/**
 * Which process owns a socket, on Linux: the socket tables of this network namespace (/proc/self/net/{tcp,udp}[6]:
 * endpoints, uid, inode), then the process holding that inode (/proc/<pid>/fd), its name (/proc/<pid>/comm) and its
 * user (/etc/passwd). Off the hot path: asked only when flows are listed, for the flows listed, one pass over the
 * tables and one over /proc for the whole list.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { userNames } from './accounts.ts';

export interface SocketQuery {
  protocol: 'tcp' | 'udp';
  /** The socket's own address and port (a flow's client side). */
  localAddress: string;
  localPort: number;
  /** Its peer; a UDP socket that is not connected matches any peer. */
  remoteAddress: string;
  remotePort: number;
}

export interface SocketOwner {
  pid: number | null;
  processName: string | null;
  uid: number;
  user: string | null;
}

interface SocketRow {
  local: string;
  localPort: number;
  remote: string;
  remotePort: number;
  uid: number;
  inode: number;
}

/** A /proc/net address: IPv4 as one little-endian word, IPv6 as four; IPv4-mapped IPv6 becomes IPv4. */
function procAddress(hex: string): string {
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(hex.slice(w + b, w + b + 2), 16));
  const addr = ipaddr.fromByteArray(bytes);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) return (addr as ipaddr.IPv6).toIPv4Address().toString();
  return addr.toString();
}

function socketRows(protocol: 'tcp' | 'udp'): SocketRow[] {
  const rows: SocketRow[] = [];
  for (const file of [protocol, `${protocol}6`]) {
    let text = '';
    try {
      text = readFileSync(`/proc/self/net/${file}`, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const [la, lp] = f[1].split(':');
      const [ra, rp] = f[2].split(':');
      rows.push({ local: procAddress(la), localPort: parseInt(lp, 16), remote: procAddress(ra), remotePort: parseInt(rp, 16), uid: Number(f[7]), inode: Number(f[9]) });
    }
  }
  return rows;
}

/** pid of each wanted socket inode (the first process found holding it). */
function holders(inodes: Set<number>): Map<number, number> {
  const found = new Map<number, number>();
  if (inodes.size === 0) return found;
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return found;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (!m) continue;
      const inode = Number(m[1]);
      if (inodes.has(inode) && !found.has(inode)) found.set(inode, Number(pid));
    }
    if (found.size === inodes.size) break;
  }
  return found;
}

/** The name of process `pid` (/proc/<pid>/comm), or null when it is gone. */
export function processName(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() || null;
  } catch {
    return null;
  }
}

/** The owner of each queried socket, in order; null where no socket matches (closed since). Never throws. */
export function socketOwners(queries: readonly SocketQuery[]): (SocketOwner | null)[] {
  const tables = { tcp: null as SocketRow[] | null, udp: null as SocketRow[] | null };
  const rows = queries.map((q) => {
    const table = (tables[q.protocol] ??= socketRows(q.protocol));
    const mine = table.filter((r) => r.localPort === q.localPort && (r.local === q.localAddress || r.local === '0.0.0.0' || r.local === '::'));
    return mine.find((r) => r.remote === q.remoteAddress && r.remotePort === q.remotePort) ?? mine.find((r) => q.protocol === 'udp' && r.remotePort === 0) ?? null;
  });
  const pids = holders(new Set(rows.filter((r): r is SocketRow => r !== null && r.inode !== 0).map((r) => r.inode)));
  const nameOf = userNames();
  return rows.map((r) => {
    if (!r) return null;
    const pid = pids.get(r.inode) ?? null;
    return { pid, processName: pid === null ? null : processName(pid), uid: r.uid, user: nameOf(r.uid) };
  });
}
