/** The captured pcap fixtures (see test/fixtures/capture.ts), as IP packets. */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readPcap, type PcapPacket } from '../helpers/pcap.ts';

const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url));
export const FIXTURES = ['tcp.pcap', 'icmp.pcap', 'udp.pcap'];

export function loadFixture(name: string): PcapPacket[] {
  return readPcap(join(fixtures, name));
}
