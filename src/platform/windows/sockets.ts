/**
 * Which local addresses and ports sockets are bound to on Windows (iphlpapi GetExtendedTcpTable with the listener
 * class, GetExtendedUdpTable), through koffi: what the doctor checks a server port against.
 */
import koffi from 'koffi';

const AF_INET = 2;
const AF_INET6 = 23;
const TCP_TABLE_OWNER_PID_LISTENER = 3;
const UDP_TABLE_OWNER_PID = 1;
const NO_ERROR = 0;
const ERROR_INSUFFICIENT_BUFFER = 122;
/** Row sizes of MIB_TCPROW_OWNER_PID, MIB_TCP6ROW_OWNER_PID, MIB_UDPROW_OWNER_PID, MIB_UDP6ROW_OWNER_PID. */
const ROW = { tcp4: 24, tcp6: 56, udp4: 12, udp6: 28 } as const;
/** Where the local address and port sit in each row. */
const LOCAL = { tcp4: [4, 8], tcp6: [0, 20], udp4: [0, 4], udp6: [0, 20] } as const;

export interface WindowsBoundSocket {
  protocol: 'tcp' | 'udp';
  address: string;
  port: number;
}

type TableFn = (table: Buffer | null, size: Uint32Array, order: number, af: number, cls: number,
  reserved: number) => number;
let fns: { tcp: TableFn; udp: TableFn } | undefined;

function api(): { tcp: TableFn; udp: TableFn } {
  if (fns) return fns;
  const lib = koffi.load('iphlpapi.dll');
  fns = {
    tcp: lib.func('__stdcall', 'GetExtendedTcpTable', 'uint32_t', ['void *', '_Inout_ uint32_t *', 'int', 'uint32_t',
      'int', 'uint32_t']) as TableFn,
    udp: lib.func('__stdcall', 'GetExtendedUdpTable', 'uint32_t', ['void *', '_Inout_ uint32_t *', 'int', 'uint32_t',
      'int', 'uint32_t']) as TableFn,
  };
  return fns;
}

function table(fn: TableFn, af: number, cls: number): Buffer | null {
  const size = new Uint32Array([0]);
  let rc = fn(null, size, 0, af, cls, 0);
  for (let tries = 0; tries < 4 && rc === ERROR_INSUFFICIENT_BUFFER; tries++) {
    const buf = Buffer.alloc(size[0] + 4096); // the table may grow between the two calls
    size[0] = buf.length;
    rc = fn(buf, size, 0, af, cls, 0);
    if (rc === NO_ERROR) return buf;
  }
  return rc === NO_ERROR ? Buffer.alloc(4) : null;
}

function ipv6Text(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  const s = groups.join(':');
  // Compress the longest zero run (RFC 5952), enough for '::' and '::1'.
  const runs = [...s.matchAll(/(^|:)0(:0)+(:|$)/g)].sort((a, b) => b[0].length - a[0].length);
  return runs.length ? s.replace(runs[0][0], '::') : s;
}

function rows(kind: keyof typeof ROW, buf: Buffer | null): WindowsBoundSocket[] {
  if (!buf) return [];
  const out: WindowsBoundSocket[] = [];
  const n = buf.readUInt32LE(0);
  const [addrAt, portAt] = LOCAL[kind];
  for (let i = 0; i < n; i++) {
    const row = 4 + i * ROW[kind];
    if (row + ROW[kind] > buf.length) break;
    const address = kind.endsWith('4') ? [0, 1, 2,
      3].map((j) => buf[row + addrAt + j]).join('.') : ipv6Text(buf.subarray(row + addrAt, row + addrAt + 16));
    // The port is in network byte order in the low 16 bits of a DWORD.
    const port = (buf[row + portAt] << 8) | buf[row + portAt + 1];
    out.push({ protocol: kind.startsWith('tcp') ? 'tcp' : 'udp', address, port });
  }
  return out;
}

export function windowsBoundSockets(): WindowsBoundSocket[] {
  const { tcp, udp } = api();
  return [
    ...rows('tcp4', table(tcp, AF_INET, TCP_TABLE_OWNER_PID_LISTENER)),
    ...rows('tcp6', table(tcp, AF_INET6, TCP_TABLE_OWNER_PID_LISTENER)),
    ...rows('udp4', table(udp, AF_INET, UDP_TABLE_OWNER_PID)),
    ...rows('udp6', table(udp, AF_INET6, UDP_TABLE_OWNER_PID)),
  ];
}
