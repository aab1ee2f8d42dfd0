/**
 * IN-TEST STAND-IN for the engine (not a mock of the packet path): keeps an InterceptConfig in memory and implements
 * the control plane's `ControlEngine` interface (the checks, idempotent add and all-or-nothing remove are the
 * control plane's own, src/control/config-changes.ts, and run for real). Used to test protocol, server, client and CLI
 * without root packet plumbing; test/control/live.test.ts runs the real engine. Its captures are real capture hubs
 * (capture/hub.ts) that no packet worker feeds: they open, pace and end as the engine's do, and stay empty.
 */
import { cloneInterceptConfig, shieldKey, type InterceptConfig } from '../../src/config/intercept-config.ts';
import { checkPortMaps, portMapsOf } from '../../src/config/port-maps.ts';
import { checkAllowLists } from '../../src/config/allow-lists.ts';
import { CaptureHub } from '../../src/capture/hub.ts';
import type { CapturePort } from '../../src/capture/port.ts';
import type { ControlEngine } from '../../src/control/control-engine.ts';
import type { EngineStats, EngineStatus, FlowRecord } from '../../src/engine/types.ts';

export class InMemoryEngine implements ControlEngine {
  cfg: InterceptConfig;
  stopCalls = 0;
  /** Calls in order, to check that a refused request changed nothing. */
  readonly calls: string[] = [];
  private readonly captureHub = new CaptureHub(() => undefined);
  readonly capture: CapturePort = {
    open: (opts) => this.captureHub.open(opts),
    backend: 'tun',
    interfaceName: (ifIndex) => (ifIndex === 0 ? 'rflct0' : `if${ifIndex}`),
  };

  constructor(cfg: InterceptConfig = { reflectAddresses: [], shieldPorts: [] }) {
    this.cfg = cloneInterceptConfig(cfg);
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
      portMaps: portMapsOf(this.cfg).map((m) => ({ ...m })),
      allow: this.cfg.allow ?? [],
      configPath: null,
      pipeName: null,
      backendInfo: {},
      hostRepairs: { count: 0, last: null },
      runsAs: 'console',
    };
  }

  config(): InterceptConfig {
    return cloneInterceptConfig(this.cfg);
  }

  async reconfigure(next: InterceptConfig): Promise<void> {
    this.calls.push(`reconfigure ${next.reflectAddresses.join(',')} ${next.shieldPorts.map(shieldKey).join(',')}`);
    checkPortMaps(next); // as the engine's checkLimits does (not its address limit: tests add many)
    checkAllowLists(next);
    this.cfg = cloneInterceptConfig(next);
  }

  async stats(): Promise<EngineStats> {
    const zero = { packets: 0, bytes: 0 };
    return {
      sampledAt: new Date().toISOString(),
      uptimeSeconds: 1,
      reflected: zero,
      shieldDropped: zero,
      forgedSourceDropped: zero,
      forwardedDropped: zero,
      passed: zero,
      malformed: { total: 0, byReason: { truncated: 0, badVersion: 0, badHeaderLength: 0, badTotalLength: 0, badExtensionHeader: 0, badTransportHeader: 0 } },
      errors: { receive: 0, send: 0, sendExpected: { hostUnreachable: 0, icmpRefused: 0 } },
      portMapRefused: 0,
      notAllowed: zero,
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
    this.captureHub.closeAll();
  }
}
