/**
 * What the running captures might want, as one union of their filters (capture/filter.ts captureInterest makes it):
 * for a backend that decides packets itself (ebpf) and must hand the taps every packet they could match
 * (PacketSource.watchCaptures). It lives here because both captures and backends speak it.
 */

/**
 * A packet is wanted when reflected packets are wanted, its protocol bit is set, its source or destination is in
 * `addresses` (null: any) and, for TCP/UDP, a port is in `ports` (null: any; a port filter never matches ICMP).
 */
export interface CaptureInterest {
  reflected: boolean;
  /** Bits 1 tcp, 2 udp, 4 icmp, 8 other (capture/filter.ts CAPTURE_PROTOCOLS order). */
  protocols: number;
  /** Raw address bytes (4 or 16 each), or null for any address. */
  addresses: Uint8Array[] | null;
  ports: number[] | null;
  /** The longest snap length of those captures: bytes of a packet any of them keeps at most. */
  snaplen: number;
}
