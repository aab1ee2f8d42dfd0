/**
 * What `stats` answers: the shared-memory counters mapped onto addresses and ports by the live slot assignment, the
 * per-second rates, and (Linux) the shield and forged-source counters the host firewall keeps instead of the data
 * plane. Main thread only; reads counters, never writes them.
 */
import { shieldKey } from '../config/intercept-config.ts';
import type { FirewallCounters, KernelDataPath } from '../packet-sources/packet-source.ts';
import { STATS_PROTOCOLS, type CountersSnapshot, type EngineCounters } from './counters.ts';
import type { DataplaneConfig } from './dataplane.ts';
import type { AddressStats, EngineStats, PacketByteCount, ShieldPortStats, StatsProtocol } from './types.ts';

/** How often rates are sampled, and how long one reading of the host firewall's shield counters serves requests. */
const SAMPLE_INTERVAL_MS = 1000;

type Rates = EngineStats['rates'];
const NO_RATES: Rates = { reflectedPackets: 0, reflectedBytes: 0, shieldDroppedPackets: 0 };

/**
 * Map a snapshot onto the public `EngineStats` shape, using the slot assignment of the live config. Rates are
 * sampled over time (EngineStatsSource); pass them in.
 */
export function buildEngineStats(
  snap: CountersSnapshot,
  cfg: DataplaneConfig,
  sample: { sampledAt: Date; uptimeSeconds: number; rates?: Rates },
): EngineStats {
  const byProtocol = {} as Record<StatsProtocol, PacketByteCount>;
  for (const name of STATS_PROTOCOLS) byProtocol[name] = { packets: 0, bytes: 0 };
  const byAddress: AddressStats[] = cfg.reflect.map(({ address, slot }) => {
    const s = snap.addressSlots[slot];
    for (const name of STATS_PROTOCOLS) {
      byProtocol[name].packets += s.byProtocol[name].packets;
      byProtocol[name].bytes += s.byProtocol[name].bytes;
    }
    const own = structuredClone(s.byProtocol);
    return { address, packets: s.packets, bytes: s.bytes, byProtocol: own, notAllowed: { ...s.notAllowed } };
  });
  const byShieldPort: ShieldPortStats[] = cfg.shield.map(({ port, protocol, slot }) => ({
    port,
    protocol,
    packets: snap.shieldSlots[slot].packets,
    bytes: snap.shieldSlots[slot].bytes,
  }));
  return {
    sampledAt: sample.sampledAt.toISOString(),
    uptimeSeconds: sample.uptimeSeconds,
    reflected: { ...snap.reflected },
    shieldDropped: { ...snap.shieldDropped },
    forgedSourceDropped: { ...snap.forgedSourceDropped },
    forwardedDropped: { packets: 0, bytes: 0 }, // only a host firewall drops these (below)
    passed: { ...snap.passed },
    malformed: { total: snap.malformed.total, byReason: { ...snap.malformed.byReason } },
    errors: { ...snap.errors, sendExpected: { ...snap.errors.sendExpected } },
    portMapRefused: snap.portMapRefused,
    notAllowed: { ...snap.notAllowed },
    byProtocol,
    byAddress,
    byShieldPort,
    rates: sample.rates ?? { reflectedPackets: 0, reflectedBytes: 0, shieldDroppedPackets: 0 },
  };
}

interface HostShieldReading {
  at: number;
  counts: FirewallCounters;
}

interface RateSample {
  at: number;
  reflectedPackets: number;
  reflectedBytes: number;
  shieldDroppedPackets: number;
}

/** The engine's stats: counters, rates sampled once a second, and the host firewall's counters if any. */
export class EngineStatsSource {
  private timer: NodeJS.Timeout | null = null;
  private previousSample: RateSample | null = null;
  private rates: Rates = { ...NO_RATES };
  private hostShieldCache: { at: number; reading: Promise<HostShieldReading | null> } | null = null;
  private hostShieldSample: { at: number; packets: number } | null = null;
  private hostShieldDropRate = 0;

  /** `readHostShield`: the backend's firewall counters (HostBackend.firewallCounters), when the host keeps them. */
  /** `onHostReadFailed`: called when a firewall reading fails (the engine checks and repairs its host state). */
  /** `kernel`: what a kernel data path (ebpf) reflected itself, added to the data plane's counters. */
  constructor(
    private readonly counters: EngineCounters,
    private readonly readHostShield: (() => Promise<FirewallCounters>) | null,
    private readonly onHostReadFailed: (() => Promise<void>) | null = null,
    private readonly kernel: KernelDataPath | null = null,
  ) {}

  /** The data plane's counters plus those a kernel data path keeps (while the host state may be read). */
  private snapshot(cfg: DataplaneConfig | null, hostReadable: boolean): CountersSnapshot {
    const snap = this.counters.snapshot();
    if (!this.kernel || !hostReadable) return snap;
    let byAddress: ReturnType<KernelDataPath['reflectedByAddress']>;
    try {
      byAddress = this.kernel.reflectedByAddress();
    } catch {
      return snap; // the maps went with a failed device; the data plane's own counters still hold
    }
    const slotOf = new Map((cfg?.reflect ?? []).map((e) => [e.address, e.slot]));
    for (const [address, counts] of byAddress) {
      const slot = slotOf.get(address);
      for (const name of STATS_PROTOCOLS) {
        const c = counts[name];
        snap.reflected.packets += c.packets;
        snap.reflected.bytes += c.bytes;
        if (slot === undefined) continue;
        const s = snap.addressSlots[slot];
        s.packets += c.packets;
        s.bytes += c.bytes;
        s.byProtocol[name].packets += c.packets;
        s.byProtocol[name].bytes += c.bytes;
      }
    }
    return snap;
  }

  /** Drop the cached firewall reading (it is of host state that was just replaced). */
  forgetHostReading(): void {
    this.hostShieldCache = null;
  }

  /** Start sampling rates (once a second, from shared memory only: no helper process). */
  start(): void {
    this.timer = setInterval(() => this.sampleRates(), SAMPLE_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** `hostReadable`: whether the host state may be read now (the engine is running). */
  async stats(cfg: DataplaneConfig, uptimeSeconds: number, hostReadable: boolean): Promise<EngineStats> {
    let hostShield = hostReadable ? await this.hostShieldCounts() : null;
    if (hostReadable && hostShield === null && this.readHostShield && this.onHostReadFailed) {
      await this.onHostReadFailed();
      this.hostShieldCache = null;
      hostShield = await this.hostShieldCounts();
    }
    const sample = { sampledAt: new Date(), uptimeSeconds, rates: { ...this.rates } };
    const stats = buildEngineStats(this.snapshot(cfg, hostReadable), cfg, sample);
    if (hostShield) {
      // The host firewall drops shielded and forged traffic before it reaches us (Linux nft): its counters are the
      // truth.
      let packets = 0;
      let bytes = 0;
      for (const p of stats.byShieldPort) {
        const c = hostShield.counts.shield.get(shieldKey(p));
        p.packets = c?.packets ?? 0;
        p.bytes = c?.bytes ?? 0;
        packets += p.packets;
        bytes += p.bytes;
      }
      stats.shieldDropped = { packets, bytes };
      stats.forgedSourceDropped = { ...hostShield.counts.forgedSource };
      stats.forwardedDropped = { ...(hostShield.counts.forwarded ?? { packets: 0, bytes: 0 }) };
      // Who may use an address is enforced by the host firewall on Linux: its refusals add to the data plane's.
      for (const a of stats.byAddress) {
        const c = hostShield.counts.notAllowed?.get(a.address);
        if (!c) continue;
        a.notAllowed.packets += c.packets;
        a.notAllowed.bytes += c.bytes;
        stats.notAllowed.packets += c.packets;
        stats.notAllowed.bytes += c.bytes;
      }
      stats.rates.shieldDroppedPackets = this.hostShieldRate(hostShield.at, packets);
    }
    return stats;
  }

  /**
   * Shield and forged-source counters kept by the host firewall (Linux: one `nft` run). Reading them costs a process
   * start, so one reading serves every stats request for a second, and requests that arrive together share it.
   */
  private hostShieldCounts(): Promise<HostShieldReading | null> {
    const read = this.readHostShield;
    if (!read) return Promise.resolve(null);
    const now = Date.now();
    if (!this.hostShieldCache || now - this.hostShieldCache.at >= SAMPLE_INTERVAL_MS) {
      this.hostShieldCache = { at: now, reading: read().then((counts) => ({ at: now, counts }), () => null) };
    }
    return this.hostShieldCache.reading;
  }

  /** Drop rate from two host readings at least a second apart (readings happen only when stats are asked for). */
  private hostShieldRate(at: number, packets: number): number {
    const prev = this.hostShieldSample;
    if (!prev || at < prev.at) {
      this.hostShieldSample = { at, packets };
    } else if (at - prev.at >= SAMPLE_INTERVAL_MS) {
      this.hostShieldDropRate = Math.max(0, (packets - prev.packets) / ((at - prev.at) / 1000));
      this.hostShieldSample = { at, packets };
    }
    return this.hostShieldDropRate;
  }

  /** Reflected and data-plane shield-drop rates over the last interval. */
  private sampleRates(): void {
    const snap = this.snapshot(null, true); // totals only: no slot mapping needed
    const sample: RateSample = {
      at: Date.now(),
      reflectedPackets: snap.reflected.packets,
      reflectedBytes: snap.reflected.bytes,
      shieldDroppedPackets: snap.shieldDropped.packets,
    };
    const prev = this.previousSample;
    if (prev && sample.at > prev.at) {
      const dt = (sample.at - prev.at) / 1000;
      this.rates = {
        reflectedPackets: Math.max(0, (sample.reflectedPackets - prev.reflectedPackets) / dt),
        reflectedBytes: Math.max(0, (sample.reflectedBytes - prev.reflectedBytes) / dt),
        shieldDroppedPackets: Math.max(0, (sample.shieldDroppedPackets - prev.shieldDroppedPackets) / dt),
      };
    }
    this.previousSample = sample;
  }
}
