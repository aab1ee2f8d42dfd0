/**
 * Fixture, run inside a namespace where `retroflect run` reflects 192.0.2.1 and 2001:db8::1: crafted packets go
 * onto the engine's TUN device end to end. It sends packets "from" a fake peer (203.0.113.50, 2001:db8:50::50) to
 * the reflect addresses through raw sockets (IPPROTO_RAW: the header is ours), so they leave this host as its own —
 * the engine's firewall drops packets forwarded into its device (nftables.ts) — and the kernel routes them into the
 * engine's device; the engine reflects (or counts and drops) them, and what it reflects is routed to the peer, out of
 * a TUN device of this fixture's own (inj0, with forwarding on), where this fixture reads it.
 *
 * The packets are the captured fixtures and the corpus with a valid IP header of our choosing (the kernel drops a
 * broken one before it could reach the engine) and 1-4 random byte writes, bit flips or truncations after it.
 * Usage: tun-injector.ts <count> <seed>. Prints {"ready": true}, then one JSON line with what it counted.
 */
import { execFileSync } from 'node:child_process';
import koffi from 'koffi';
import { openTunDevice } from '../../src/packet-sources/tun/device.ts';
import { EAGAIN, libc } from '../../src/platform/linux/libc.ts';
import { rng } from '../helpers/rng.ts';
import { corpus } from '../packet/corpus.ts';
import { FIXTURES, loadFixture } from '../packet/fixture-files.ts';

const [countArg = '10000', seedArg = '1'] = process.argv.slice(2);
const COUNT = Number(countArg);
const random = rng(Number(seedArg));
const DEV = 'inj0';
const PEER4 = [203, 0, 113, 50];
const REFLECT4 = [192, 0, 2, 1];
const PEER6 = Buffer.from('20010db8005000000000000000000050', 'hex');
const REFLECT6 = Buffer.from('20010db8000000000000000000000001', 'hex');

const c = libc();
const fd = openTunDevice(DEV, { mtu: 1500, vnetHdr: false });
const sendto = koffi.load('libc.so.6').func('long sendto(int fd, const void *buf, unsigned long len, int flags, const void *to, unsigned int tolen)');
const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_RAW = 255;
const raw4 = c.socket(AF_INET, 3 /* SOCK_RAW */, IPPROTO_RAW);
const raw6 = c.socket(AF_INET6, 3, IPPROTO_RAW);
if (raw4 < 0 || raw6 < 0) throw new Error(`raw socket: ${c.strerror(c.errno())}`);
/** sockaddr_in / sockaddr_in6 of the reflect addresses (port 0: a raw socket ignores it). */
const to4 = Buffer.alloc(16);
to4.writeUInt16LE(AF_INET, 0);
Buffer.from(REFLECT4).copy(to4, 4);
const to6 = Buffer.alloc(28);
to6.writeUInt16LE(AF_INET6, 0);
REFLECT6.copy(to6, 8);
function send(p: Buffer): number {
  const v6 = p[0]! >> 4 === 6;
  return Number(sendto(v6 ? raw6 : raw4, p, p.length, 0, v6 ? to6 : to4, v6 ? to6.length : to4.length));
}
const sh = (file: string, args: string[]): void => void execFileSync(file, args, { stdio: 'ignore' });
sh('ip', ['link', 'set', 'dev', DEV, 'up']);
sh('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1', 'net.ipv4.conf.all.rp_filter=0', `net.ipv4.conf.${DEV}.rp_filter=0`]);
sh('ip', ['route', 'replace', '203.0.113.50/32', 'dev', DEV]);
sh('ip', ['-6', 'route', 'replace', '2001:db8:50::50/128', 'dev', DEV]);
process.stdout.write(JSON.stringify({ ready: true }) + '\n');

const seeds = [...FIXTURES.flatMap((f) => loadFixture(f).map((p) => Buffer.from(p.data))), ...corpus().map((p) => Buffer.from(p.bytes))].filter(
  (b) => b.length >= 20 && b.length <= 1500 && (b[0]! >> 4 === 4 || b[0]! >> 4 === 6),
);

function ipv4Checksum(b: Buffer, ihl: number): void {
  b.writeUInt16BE(0, 10);
  let sum = 0;
  for (let i = 0; i < ihl; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  b.writeUInt16BE(~sum & 0xffff, 10);
}

/** A seed packet re-addressed peer → reflect address, with its transport mutated. Null when it cannot be made. */
function craft(): Buffer | null {
  const src = seeds[Math.floor(random() * seeds.length)]!;
  const b = Buffer.from(src);
  const v6 = b[0]! >> 4 === 6;
  const hdr = v6 ? 40 : (b[0]! & 0x0f) * 4;
  if (hdr < 20 || b.length < hdr) return null;
  let len = b.length;
  const mutations = 1 + Math.floor(random() * 4);
  for (let m = 0; m < mutations; m++) {
    const r = random();
    const span = len - hdr;
    if (span <= 0) break;
    const at = hdr + Math.floor(random() * Math.min(span, 60));
    if (r < 0.5) b[at] = Math.floor(random() * 256);
    else if (r < 0.85) b[at] ^= 1 << Math.floor(random() * 8);
    else len = hdr + Math.floor(random() * (span + 1));
  }
  const p = b.subarray(0, len);
  if (v6) {
    p.writeUInt16BE(len - 40, 4);
    p[7] = 64;
    PEER6.copy(p, 8);
    REFLECT6.copy(p, 24);
  } else {
    p.writeUInt16BE(len, 2);
    p.writeUInt16BE(0, 6); // no fragments: a fragment would wait for reassembly instead of being forwarded at once
    p[8] = 64;
    Buffer.from(PEER4).copy(p, 12);
    Buffer.from(REFLECT4).copy(p, 16);
    ipv4Checksum(p, hdr);
  }
  return p;
}

const rx = Buffer.alloc(65536);
let written = 0;
let writeErrors = 0;
let returned = 0;
let returnedOther = 0;
function drain(): void {
  for (;;) {
    const n = c.read(fd, rx, rx.length);
    if (n < 0) {
      if (c.errno() === EAGAIN) return;
      throw new Error(`read: ${c.strerror(c.errno())}`);
    }
    const v6 = rx[0]! >> 4 === 6;
    const fromReflect = v6 ? rx.subarray(8, 24).equals(REFLECT6) : rx.subarray(12, 16).equals(Buffer.from(REFLECT4));
    if (fromReflect) returned++;
    else returnedOther++;
  }
}

for (let i = 0; i < COUNT; i++) {
  const p = craft();
  if (!p) continue;
  if (send(p) < 0) writeErrors++;
  else written++;
  if (i % 32 === 31) {
    drain();
    await new Promise((r) => setImmediate(r));
  }
}
const end = Date.now() + 1500;
while (Date.now() < end) {
  drain();
  await new Promise((r) => setTimeout(r, 20));
}
process.stdout.write(JSON.stringify({ written, writeErrors, returned, returnedOther }) + '\n');
c.close(fd);
c.close(raw4);
c.close(raw6);
