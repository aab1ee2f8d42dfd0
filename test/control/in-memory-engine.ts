/**
 * IN-TEST STAND-IN for the engine (not a mock of the packet path): keeps an InterceptConfig in memory and implements
 * the control plane's `ControlEngine` interface with the engine's semantics (canonical addresses, idempotent add,
 * all-or-nothing remove with E_ADDRESS_NOT_FOUND/E_PORT_NOT_FOUND). Used to test protocol, server, client and CLI
 * without root packet plumbing; test/control/live.test.ts runs the real engine.
 */
import { canonicalAddress, shieldKey, type InterceptConfig, type ShieldPort } from '../../src/config/intercept-config.ts';
import type { ControlEngine } from '../../src/control/server.ts';
import type { EngineStats, EngineStatus, FlowRecord } from '../../src/engine/types.ts';
import { ErrorCode, RetroflectError } from '../../src/errors.ts';

export class InMemoryEngine implements ControlEngine {
  cfg: InterceptConfig;
  stopCalls = 0;
  /** Calls in order, to check that a refused request changed nothing. */
  readonly calls: string[] = [];

  constructor(cfg: InterceptConfig = { reflectAddresses: [], shieldPorts: [] }) {
    this.cfg = { reflectAddresses: [...cfg.reflectAddresses], shieldPorts: cfg.shieldPorts.map((p) => ({ ...p })) };
  }

  status(): EngineStatus {
    return {
      state: this.stopCalls ? 'stopped' : 'running',
      version: '0.0.0-test',
      backend: 'tun',
      pid: process.pid,
      startedAt: new Date(0).toISOString(),
      uptimeSeconds: 1,
      reflectAddresses: [...this.cfg.reflectAddresses],
      shieldPorts: this.cfg.shieldPorts.map((p) => ({ ...p })),
      configPath: null,
      pipeName: null,
      backendInfo: {},
    };
  }

  config(): InterceptConfig {
    return { reflectAddresses: [...this.cfg.reflectAddresses], shieldPorts: this.cfg.shieldPorts.map((p) => ({ ...p })) };
  }

  async addAddresses(addrs: readonly string[]) {
    this.calls.push(`addAddresses ${addrs.join(',')}`);
    const c = addrs.map(canonicalAddress);
    const existing = c.filter((a) => this.cfg.reflectAddresses.includes(a));
    const added = c.filter((a) => !existing.includes(a));
    this.cfg.reflectAddresses.push(...added);
    return { added, existing, warnings: [] as string[] };
  }

  async removeAddresses(addrs: readonly string[]) {
    this.calls.push(`removeAddresses ${addrs.join(',')}`);
    const c = addrs.map(canonicalAddress);
    const missing = c.filter((a) => !this.cfg.reflectAddresses.includes(a));
    if (missing.length) throw new RetroflectError(ErrorCode.ADDRESS_NOT_FOUND, 'missing', { details: { missing } });
    this.cfg.reflectAddresses = this.cfg.reflectAddresses.filter((a) => !c.includes(a));
    return c;
  }

  async addShieldPorts(ports: readonly ShieldPort[]) {
    this.calls.push(`addShieldPorts ${ports.map(shieldKey).join(',')}`);
    const have = new Set(this.cfg.shieldPorts.map(shieldKey));
    const existing = ports.filter((p) => have.has(shieldKey(p)));
    const added = ports.filter((p) => !have.has(shieldKey(p)));
    this.cfg.shieldPorts.push(...added.map((p) => ({ ...p })));
    return { added: [...added], existing: [...existing] };
  }

  async removeShieldPorts(ports: readonly ShieldPort[]) {
    this.calls.push(`removeShieldPorts ${ports.map(shieldKey).join(',')}`);
    const drop = new Set(ports.map(shieldKey));
    this.cfg.shieldPorts = this.cfg.shieldPorts.filter((p) => !drop.has(shieldKey(p)));
    return [...ports];
  }

  async stats(): Promise<EngineStats> {
    const zero = { packets: 0, bytes: 0 };
    return {
      sampledAt: new Date().toISOString(),
      uptimeSeconds: 1,
      reflected: zero,
      shieldDropped: zero,
      passed: zero,
      malformed: { total: 0, byReason: { truncated: 0, badVersion: 0, badHeaderLength: 0, badTotalLength: 0, badExtensionHeader: 0, badTransportHeader: 0 } },
      errors: { receive: 0, send: 0 },
      byProtocol: { tcp: zero, udp: zero, icmp: zero, other: zero },
      byAddress: [],
      byShieldPort: [],
      rates: { reflectedPackets: 0, reflectedBytes: 0, shieldDroppedPackets: 0 },
    };
  }

  flows(): FlowRecord[] {
    return [];
  }

  async stop(): Promise<void> {
    this.stopCalls++;
  }
}
