/**
 * A DataView over the packet buffer, for reading and swapping addresses as big-endian 32-bit words (one bounds-checked
 * load + byte swap instead of four byte loads). Cached per buffer: a backend reuses one batch buffer for every
 * receive, so a view is created only when a different buffer comes along (a new batch, a test), never per packet.
 */
let lastBuffer: Uint8Array | undefined;
let lastView: DataView = new DataView(new ArrayBuffer(0));

export function packetView(buf: Uint8Array): DataView {
  if (buf !== lastBuffer) {
    lastView = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    lastBuffer = buf;
  }
  return lastView;
}
