/**
 * Fault matrix behind docs/reliability.md (`npm run reliability -- faults`): the real `retroflect run` in a
 * namespace, each fault applied and what is left behind recorded.
 *  - every stop signal (src/cli/stop-signals.ts STOP_SIGNALS) at start-up, running, under load (iperf3 + a live
 *    change every 100 ms) and during cleanup (the same signal again 5 ms later);
 *  - SIGKILL during persisted changes, repeatedly: the config file must parse and hold only addresses that were
 *    ever configured; leftovers must be cleaned by the next start;
 *  - disk full and read-only config directory (a small tmpfs mounted in a private temp directory);
 *  - the TUN device deleted under the engine.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { STOP_SIGNALS } from '../../src/cli/stop-signals.ts';
import { loadConfigFile } from '../../src/config/config-file.ts';
import { ControlClient } from '../../src/control/client.ts';
import { createTopology, waitFor, type Topology } from '../helpers/netns.ts';
import { engineLeftovers, engineDevice, privateDir, removeDir, spawnEngine, startEngine, type EngineHandle } from '../helpers/engine.ts';


type Phase = 'start-up' | 'running' | 'under load' | 'cleanup';

async function signalCase(t: Topology, dir: string, sig: NodeJS.Signals, phase: Phase, n: number): Promise<{ exit: number | string; left: string[] }> {
  const opts = { config: false as const, pipe: join(dir, `s${n}.sock`), args: ['--reflect', '192.0.2.1', '--shield', '8080/tcp'] };
  let e: EngineHandle;
  let stopLoad: (() => void) | null = null;
  if (phase === 'start-up') {
    e = spawnEngine(t.a, dir, opts);
    await waitFor('device', async () => (await t.a.run('ip', ['link', 'show', 'dev', engineDevice()])).code === 0, 30_000);
  } else {
    e = await startEngine(t.a, dir, opts);
  }
  if (phase === 'under load') {
    const iperf = t.a.spawn('iperf3', ['-c', '192.0.2.1', '-t', '30']);
    const client = await ControlClient.connect({ pipe: e.pipe });
    let on = true;
    void (async () => {
      for (let i = 0; on; i++) {
        await client.call(i % 2 ? 'shield.remove' : 'shield.add', { ports: ['9100/tcp'], temporary: true }).catch(() => undefined);
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    stopLoad = () => {
      on = false;
      client.close();
      iperf.kill('SIGKILL');
    };
  }
  e.child.kill(sig);
  if (phase === 'cleanup') {
    await new Promise((r) => setTimeout(r, 5));
    if (e.alive()) e.child.kill(sig);
  }
  const exit = await e.exited;
  stopLoad?.();
  const left = await engineLeftovers(t.a, e.pipe);
  if (left.length) await e.kill(); // next case starts clean: the next start would clean the table anyway
  return { exit, left };
}

async function sigkillDuringChanges(t: Topology, dir: string, rounds: number) {
  const cfg = join(dir, 'kill', 'config.json');
  mkdirSync(join(dir, 'kill'), { recursive: true });
  writeFileSync(cfg, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.1'] }));
  const candidates = new Set(['192.0.2.1', ...Array.from({ length: 8 }, (_, i) => `203.0.113.${i + 10}`)]);
  let tempFilesSeen = 0;
  let tempFilesRemovedByNextStart = 0;
  let configBroken = 0;
  let tableLeft = 0;
  for (let r = 0; r < rounds; r++) {
    const e = await startEngine(t.a, dir, { config: cfg, pipe: join(dir, `k${r}.sock`), args: [] });
    const client = await ControlClient.connect({ pipe: e.pipe });
    let on = true;
    const loop = (async () => {
      for (let i = 0; on; i++) {
        const a = `203.0.113.${(i % 8) + 10}`;
        await client.call('address.add', { addresses: [a] }).catch(() => undefined);
        await client.call('shield.add', { ports: [`${9200 + (i % 8)}/tcp`] }).catch(() => undefined);
        await client.call('address.remove', { addresses: [a] }).catch(() => undefined);
        // A dead connection rejects at once: yield a macrotask so the loop cannot starve the event loop.
        await new Promise((res) => setImmediate(res));
      }
    })();
    await new Promise((res) => setTimeout(res, 300 + Math.floor(Math.random() * 700)));
    e.child.kill('SIGKILL');
    on = false;
    await e.exited;
    await loop;
    client.close();
    if ((await engineLeftovers(t.a, e.pipe)).includes('nft table')) tableLeft++;
    const temps = readdirSync(join(dir, 'kill')).filter((f) => f.endsWith('.tmp'));
    tempFilesSeen += temps.length;
    try {
      const c = loadConfigFile(cfg).config;
      if (!c.reflectAddresses.every((a) => candidates.has(a))) configBroken++;
    } catch {
      configBroken++;
    }
    if (temps.length) {
      const next = await startEngine(t.a, dir, { config: cfg, pipe: join(dir, `k${r}b.sock`), args: [] });
      next.child.kill('SIGTERM');
      await next.exited;
      tempFilesRemovedByNextStart += temps.length - readdirSync(join(dir, 'kill')).filter((f) => f.endsWith('.tmp')).length;
    }
  }
  const last = await startEngine(t.a, dir, { config: cfg, pipe: join(dir, 'klast.sock'), args: [] });
  last.child.kill('SIGTERM');
  await last.exited;
  return { rounds, configBroken, tempFilesSeen, tempFilesRemovedByNextStart, tableLeftByKill: tableLeft, leftAfterNextStartAndStop: await engineLeftovers(t.a, join(dir, 'klast.sock')) };
}

async function diskFullAndReadOnly(t: Topology, dir: string) {
  const mnt = join(dir, 'small');
  mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
  const out: Record<string, unknown> = {};
  try {
    const cfg = join(mnt, 'config.json');
    writeFileSync(cfg, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.1'] }));
    const e = await startEngine(t.a, dir, { config: cfg, pipe: join(dir, 'full.sock'), args: [] });
    const before = readFileSync(cfg);
    spawnSync('dd', ['if=/dev/zero', `of=${join(mnt, 'filler')}`, 'bs=4k', 'count=64']);
    const full = await e.cli(['shield', 'add', '9300/tcp']);
    out.diskFull = { exit: full.code, error: full.json?.error?.code, runningShield: (await e.cli(['status'])).json.shieldPorts, fileUnchanged: readFileSync(cfg).equals(before), temps: readdirSync(mnt).filter((f) => f.endsWith('.tmp')) };
    execFileSync('rm', [join(mnt, 'filler')]);
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    const ro = await e.cli(['address', 'add', '203.0.113.30']);
    out.readOnly = { exit: ro.code, error: ro.json?.error?.code, runningAddresses: (await e.cli(['status'])).json.reflectAddresses, fileUnchanged: readFileSync(cfg).equals(before) };
    const tmp = await e.cli(['address', 'add', '203.0.113.31', '--temporary']);
    out.temporaryStillWorks = tmp.code === 0;
    e.child.kill('SIGTERM');
    out.stopExit = await e.exited;
    out.left = await engineLeftovers(t.a, e.pipe);
  } finally {
    spawnSync('umount', [mnt]);
  }
  return out;
}

async function deletedTun(t: Topology, dir: string) {
  const e = await startEngine(t.a, dir, { config: false, pipe: join(dir, 'deltun.sock'), args: ['--reflect', '192.0.2.1', '--shield', '8080/tcp', '--backend', 'tun'] });
  await t.a.must('ip', ['link', 'del', engineDevice('tun')]);
  const exit = await Promise.race([e.exited, new Promise((r) => setTimeout(() => r('still running after 10 s'), 10_000))]);
  const output = e.output().split('\n').filter((l) => /error|TUN/.test(l)).slice(-2);
  await e.kill();
  return { exit, output, left: await engineLeftovers(t.a, e.pipe) };
}

export async function runFaults(log: (s: string) => void = () => undefined, signals = true) {
  const t = await createTopology('faults');
  const dir = privateDir('faults');
  t.a.spawn('iperf3', ['-s']);
  const result: Record<string, unknown> = {};
  try {
    const matrix: Record<string, Record<Phase, string>> = {};
    let n = 0;
    for (const sig of signals ? STOP_SIGNALS : []) {
      matrix[sig] = {} as Record<Phase, string>;
      for (const phase of ['start-up', 'running', 'under load', 'cleanup'] as Phase[]) {
        const r = await signalCase(t, dir, sig, phase, n++);
        matrix[sig][phase] = `exit ${r.exit}${r.left.length ? `, left: ${r.left.join(', ')}` : ', clean'}`;
        log(`${sig} ${phase}: ${matrix[sig][phase]}`);
      }
    }
    result.signals = matrix;
    result.sigkillDuringChanges = await sigkillDuringChanges(t, dir, 20);
    log(JSON.stringify(result.sigkillDuringChanges));
    result.diskFullAndReadOnly = await diskFullAndReadOnly(t, dir);
    log(JSON.stringify(result.diskFullAndReadOnly));
    result.deletedTun = await deletedTun(t, dir);
    log(JSON.stringify(result.deletedTun));
  } finally {
    await t.destroy();
    removeDir(dir);
  }
  return result;
}
