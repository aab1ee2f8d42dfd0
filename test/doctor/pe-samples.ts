/**
 * PE samples for the doctor's tests: the mingw-built WinDivert64.sys stand-in (native/fake_driver.c) made to carry a
 * signature entry. The doctor checks that a signature is PRESENT (a non-empty security directory), not that Windows
 * trusts it, so an entry of the right shape is what the test needs.
 */
/** Append a WIN_CERTIFICATE (PKCS#7 type) and point the security directory at it: "a signature is present". */
export function withSignatureEntry(pe: Buffer): Buffer {
  const peAt = pe.readUInt32LE(0x3c);
  const opt = peAt + 24;
  const dirs = opt + (pe.readUInt16LE(opt) === 0x20b ? 112 : 96);
  const pad = Buffer.alloc((8 - (pe.length % 8)) % 8);
  const cert = Buffer.alloc(16);
  cert.writeUInt32LE(16, 0); // dwLength
  cert.writeUInt16LE(0x0200, 4); // WIN_CERT_REVISION_2_0
  cert.writeUInt16LE(0x0002, 6); // WIN_CERT_TYPE_PKCS_SIGNED_DATA
  const out = Buffer.concat([pe, pad, cert]);
  out.writeUInt32LE(pe.length + pad.length, dirs + 4 * 8);
  out.writeUInt32LE(cert.length, dirs + 4 * 8 + 4);
  return out;
}

