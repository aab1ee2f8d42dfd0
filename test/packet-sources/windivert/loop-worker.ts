/**
 * A packet worker for the WinDivert tests: the same loop as src/engine/worker.ts (receive, take control messages,
 * decide with the real Dataplane, send), on a real worker thread, without the Engine around it, so
 * live-change.test.ts can drive HostBackend.apply() and PacketSource.adopt() directly and count reconfigures
 * and send errors. engine.test.ts runs the same scenario through the real Engine and its worker.
 */
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import type { WinDivertSourceInit, WinDivertSourceUpdate } from '../../../src/packet-sources/packet-source.ts';
import { createWinDivertPacketSource } from '../../../src/packet-sources/windivert/source.ts';
import type { InterceptConfig } from '../../../src/config/intercept-config.ts';
import { dataplaneConfig, makeDataplane, stopLikeWorker } from '../../helpers/windivert-double.ts';

type Msg = { type: 'reconfigure'; config: InterceptConfig; update: WinDivertSourceUpdate } | { type: 'stop' };
const { init, config, port } = workerData as { init: WinDivertSourceInit; config: InterceptConfig; port: MessagePort };

const source = createWinDivertPacketSource(init, config);
const { dataplane } = makeDataplane(config);
let stopping = false;
let reconfigures = 0;
port.postMessage({ type: 'ready' });
while (!stopping) {
  const n = source.receive(50);
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const msg = m.message as Msg;
    if (msg.type === 'stop') stopping = true;
    else {
      dataplane.configure(dataplaneConfig(msg.config));
      source.adopt(msg.config, msg.update);
      reconfigures++;
    }
  }
  const { data, offset, length, outbound, verdict } = source.batch;
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    verdict[i] = outbound[i] === 1 ? dataplane.outbound(data, offset[i], length[i], now) : dataplane.inbound(data, offset[i], length[i], now, source.batch.injected[i]);
  }
  if (n > 0) source.send();
}
const drained = stopLikeWorker(source, dataplane); // as worker.ts: decide what is still queued, then close
port.postMessage({ type: 'stopped', reconfigures, drained, sendErrors: source.sendErrors, expectedSendFailures: { ...source.expectedSendFailures } });
