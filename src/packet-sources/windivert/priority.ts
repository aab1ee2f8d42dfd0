/**
 * The WinDivert priority retroflect opens its handles with unless `--priority` says otherwise.
 *
 * WinDivert hands a packet to the matching handle of highest priority first; what that handle re-injects goes on
 * only to handles of LOWER priority. Handles of equal priority with overlapping filters run in an undefined order,
 * and 0 is the documented default every other WinDivert tool uses, so 0 would make our order against such a tool
 * a matter of chance. We take a priority above 0 on purpose:
 *  - a packet to a reflect address must be reflected before any other tool acts on it (a VPN capturing it first
 *    would send it off the host, where it was never meant to go);
 *  - shielded packets are dropped before other tools spend work on them, and our reflected packets reach tools of
 *    lower priority as the ordinary inbound packets they now are;
 *  - it is far from the maximum (30000), so an admin can still place a tool above retroflect, and a second engine
 *    on the same host can take its own value with `--priority`.
 */
export const DEFAULT_WINDIVERT_PRIORITY = 1000;
