/**
 * The packet worker: the only thread that touches packets. It owns the PacketSource and the Dataplane and runs a
 * plain synchronous loop — receive a batch, take any control messages, decide every packet, send the batch back.
 *
 * Control messages are taken with `receiveMessageOnPort` *after* each receive and *before* the batch is decided.
 * The main thread posts a config that covers an address before it routes (or filters) that address to us, so a
 * packet can never be decided under a config older than the route that brought it here.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { AppGateMark, type FirewallDropSink, type KernelPacketSink, type PacketSource }
  from '../packet-sources/packet-source.ts';
import { createPacketSource } from '../packet-sources/registry.ts';
import { EngineCounters } from './counters.ts';
import { Dataplane } from './dataplane.ts';
import { FlowTable } from './flow-table.ts';
import { isRetroflectError } from '../errors.ts';
import { CaptureTaps } from '../capture/tap.ts';
import { captureInterest } from '../capture/filter.ts';
import { DropCause, FirewallDropCause, Verdict } from '../packet/verdicts.ts';
import { ParsedPacket, parsePacket } from '../packet/parse.ts';
import type { MainToWorker, WorkerData, WorkerToMain } from './worker-protocol.ts';

/** How long one receive may block, so stop and config messages are seen promptly on an idle link. */
const RECEIVE_TIMEOUT_MS = 50;
/** How often idle flows are swept out of the flow table (and idle mapped flows out of a kernel cache). */
const FLOW_SWEEP_INTERVAL_MS = 1000;

function post(port: MessagePort, msg: WorkerToMain): void {
  port.postMessage(msg);
}

async function main(): Promise<void> {
  const data = workerData as WorkerData;
  const port = data.port;
  const counters = new EngineCounters(data.countersBuffer);
  const flows = new FlowTable({ buffer: data.flowsBuffer });
  const dataplane = new Dataplane(counters, flows);
  dataplane.configure(data.dataplane);
  const taps = new CaptureTaps();

  let source: PacketSource;
  try {
    source = await createPacketSource(data.init, data.config);
  } catch (err) {
    post(port, { type: 'fatal', error: describe(err) });
    return;
  }
  dataplane.useMappedFlowCache(source.mappedFlowCache ?? null);
  post(port, { type: 'ready' });

  let stopping = false;
  // Packets the host firewall dropped before they reached us (Linux nft): reported by the source only while some
  // capture's filter could match one, and offered to the taps with the cause the firewall gave.
  const dropped = new ParsedPacket();
  const firewallDrop: FirewallDropSink = (buf, off, len, cause, ifIndex, timeMs) => {
    parsePacket(buf, off, len, dropped);
    const dropCause = cause === FirewallDropCause.ShieldPort
      ? DropCause.ShieldPort
      : cause === FirewallDropCause.NotAllowed ? DropCause.NotAllowed : DropCause.ForgedSource;
    // A not-allowed drop is of a packet this host sent (nft output hook): shown as outbound.
    const outbound = cause === FirewallDropCause.NotAllowed;
    taps.offer(buf, off, len, outbound, ifIndex, Verdict.Drop, dropCause, dropped, timeMs);
  };
  // Packets the kernel data path reflected itself (ebpf) that some capture might want: offered as reflected.
  const kernelPacket: KernelPacketSink = (buf, off, capLen, wireLen, ifIndex, p, timeMs) =>
    taps.offer(buf, off, capLen, true, ifIndex, Verdict.Reflect, 0, p, timeMs, wireLen);
  let kernelLostSeen = 0;
  let observingKernel = false;
  const observeKernelPackets = (): void => {
    const want = taps.count > 0;
    if (!source.observeKernelPackets || want === observingKernel) return;
    observingKernel = want;
    source.observeKernelPackets(want ? kernelPacket : null);
    kernelLostSeen = source.kernelPacketsLost ?? 0;
  };
  let observingDrops = false;
  let dropsLostSeen = 0;
  const observeFirewallDrops = (): void => {
    const want = taps.wantsFirewallDrops;
    if (!source.observeFirewallDrops || want === observingDrops) return;
    observingDrops = want; // once, even when starting fails: one warning per capture session, not per batch
    dropsLostSeen = source.firewallDropsLost ?? 0;
    source.observeFirewallDrops(want ? firewallDrop : null);
  };
  const handleMessage = (msg: MainToWorker): void => {
    try {
      handleUnchecked(msg);
    } catch (err) {
      // A config the main thread validated failing here is a bug; a capture's side job failing (the backend cannot
      // report firewall drops) is not. Either way the engine keeps running as it was, and the log says why.
      post(port, { type: 'warning', error: describe(err) });
    }
    // After the kernel's capture maps are written (watchCaptures): capture.start answers only then.
    if (msg.type === 'capture') post(port, { type: 'captureTaken', seq: msg.seq });
  };
  const handleUnchecked = (msg: MainToWorker): void => {
    switch (msg.type) {
      case 'dataplane':
        dataplane.configure(msg.dataplane);
        break;
      case 'reconfigure':
        dataplane.configure(msg.dataplane);
        source.adopt(msg.config, msg.update);
        break;
      case 'capture':
        // What the kernel already queued goes to the captures it was copied for (an engine that stops resends the
        // list and waits for the answer before it ends them: engine.ts endCaptures).
        if (observingKernel) source.flushKernelPackets?.();
        taps.update(msg.captures);
        source.watchCaptures?.(captureInterest(msg.captures));
        observeKernelPackets();
        observeFirewallDrops();
        break;
      case 'stop':
        stopping = true;
        break;
    }
  };
  const drainMessages = (): void => {
    for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
      handleMessage(m.message as MainToWorker);
    }
  };

  const batch = source.batch;
  let lastSweep = Date.now();
  let sendErrorsSeen = 0;
  const expectedSeen = { hostUnreachable: 0, icmpRefused: 0 };
  // A packet that is not allowed is answered at once (a TCP reset, ICMP port unreachable) from the reflect address.
  const sendRefusal = (i: number): void => {
    source.sendRefusal(i, dataplane.refusal, dataplane.refusalLength);
    dataplane.refusalLength = 0;
  };
  const decideAndSend = (n: number, now: number): void => {
    const { data: buf, offset, length, outbound, ifIndex, verdict, partialChecksum, injected, appGate } = batch;
    // The backend's own "who" check, asked by the data plane (held packets come back later, refused ones are refused).
    dataplane.gate = source.outboundGate ?? null;
    const decideOutbound = (i: number): Verdict =>
      dataplane.outbound(buf, offset[i], length[i], now, partialChecksum[i], i);
    if (taps.count === 0) {
      for (let i = 0; i < n; i++) {
        const v = outbound[i] === 1
          ? decideOutbound(i)
          : dataplane.inbound(buf, offset[i], length[i], now, injected[i]);
        verdict[i] = v;
        if (v === Verdict.Drop && dataplane.refusalLength !== 0) sendRefusal(i);
      }
    } else {
      // Capturing: the same decisions, then the tap copies each packet as it will be sent (after reflection).
      const origin = performance.timeOrigin;
      for (let i = 0; i < n; i++) {
        const out = outbound[i] === 1;
        const v = out ? decideOutbound(i) : dataplane.inbound(buf, offset[i], length[i], now, injected[i]);
        verdict[i] = v;
        if (out && appGate[i] === AppGateMark.Held) continue; // recorded when it comes back decided
        if (v === Verdict.Reflect) source.completeChecksums?.(i); // record what goes out, not an offload's partial sum
        const at = origin + performance.now();
        taps.offer(buf, offset[i], length[i], out, ifIndex[i], v, dataplane.dropCause, dataplane.packet, at);
        if (v === Verdict.Drop && dataplane.refusalLength !== 0) sendRefusal(i);
      }
    }
    source.send();
    while (source.sendErrors > sendErrorsSeen) {
      counters.addSendError();
      sendErrorsSeen++;
    }
    const expected = source.expectedSendFailures;
    if (expected) {
      while (expected.hostUnreachable > expectedSeen.hostUnreachable) {
        counters.addExpectedSendFailure('hostUnreachable');
        expectedSeen.hostUnreachable++;
      }
      while (expected.icmpRefused > expectedSeen.icmpRefused) {
        counters.addExpectedSendFailure('icmpRefused');
        expectedSeen.icmpRefused++;
      }
    }
  };
  try {
    while (!stopping) {
      const n = source.receive(RECEIVE_TIMEOUT_MS);
      if (observingDrops && source.firewallDropsLost !== dropsLostSeen) {
        // Reports the kernel could not queue: the captures missed them, so they count them as dropped.
        taps.countDropped(source.firewallDropsLost! - dropsLostSeen);
        dropsLostSeen = source.firewallDropsLost!;
      }
      if (observingKernel && source.kernelPacketsLost !== kernelLostSeen) {
        taps.countDropped(source.kernelPacketsLost! - kernelLostSeen);
        kernelLostSeen = source.kernelPacketsLost!;
      }
      drainMessages();
      const now = Date.now();
      if (n > 0) decideAndSend(n, now);
      if (now - lastSweep >= FLOW_SWEEP_INTERVAL_MS) {
        flows.sweep(now);
        dataplane.sweep(now);
        lastSweep = now;
      }
    }
    // Stop: decide everything already captured before letting go of it (see PacketSource.beginStop).
    if (source.beginStop) {
      source.beginStop();
      for (let n = source.receive(0); n > 0; n = source.receive(0)) decideAndSend(n, Date.now());
    }
  } catch (err) {
    counters.addReceiveError();
    post(port, { type: 'fatal', error: describe(err) });
  } finally {
    try {
      source.close();
    } catch {
      // Closing after a fatal error may fail too; the main thread's HostBackend.stop() cleans the host either way.
    }
  }
  post(port, { type: 'stopped' });
}

function describe(err: unknown): { code: string; message: string; hint?: string; details?: Record<string, unknown> } {
  if (isRetroflectError(err)) return err.toJSON();
  const e = err as Error;
  return { code: 'E_BACKEND_FAILED', message: e?.message ?? String(err) };
}

if (parentPort) {
  main().catch((err) => {
    (workerData as WorkerData).port.postMessage({ type: 'fatal', error: describe(err) } satisfies WorkerToMain);
  });
}
