/**
 * A flow as `flows` reports it (`FlowRecord`): the one shape for the data plane's flow table (engine/flow-table.ts),
 * a kernel data path's flows (packet-sources `KernelDataPath`) and the wire (docs/protocol.md). It lives this low so
 * both the engine and the backends can use it; engine/types.ts re-exports it with the other public shapes.
 */

export type FlowProtocol = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'other';

export interface FlowRecord {
  protocol: FlowProtocol;
  /** The reflect address the local client connected to (and the address the local server sees as its peer). */
  reflectAddress: string;
  /** This host's address the client used. */
  localAddress: string;
  /** The client's port (TCP/UDP); the ICMP echo identifier for ICMP; 0 otherwise. */
  clientPort: number;
  /** The server's port (TCP/UDP): the local port the traffic reached; 0 otherwise. */
  serverPort: number;
  /**
   * When the flow came through a port map: the reflect-address port the client connected to (serverPort is then
   * the map's target). Null for flows without a map.
   */
  mappedFromPort: number | null;
  packets: number;
  bytes: number;
  firstSeen: string;
  lastSeen: string;
  /** TCP: 'open' until FIN or RST is seen, then 'closed'. Others: 'active'. */
  state: 'open' | 'closed' | 'active';
  /**
   * Who made the flow, where the platform can tell (null otherwise, or when the socket is gone): the client
   * process's id and name, its user (uid and name; Linux), and on Windows its package family name. Looked up when
   * flows are listed, for the most recent ones (Engine.flows), never per packet.
   */
  pid: number | null;
  processName: string | null;
  uid: number | null;
  user: string | null;
  packageFamilyName: string | null;
}
