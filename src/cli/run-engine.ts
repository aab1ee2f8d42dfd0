/**
 * `retroflect run`: load the persisted config, add the command line's entries for this run, check everything,
 * start the engine and its control pipe, and stay up until Ctrl+C, SIGTERM, console close or a `stop` request.
 *
 * Readiness contract (tests and Start-Retroflect rely on it): once the pipe answers, a line starting with `Ready.`
 * is printed on stdout. Exit codes are `ExitCode` (src/errors.ts), listed in README.md.
 */
import {
  buildInterceptConfig,
  cloneInterceptConfig,
  shieldKey,
  type InterceptConfig,
} from '../config/intercept-config.ts';
import { Engine } from '../engine/engine.ts';
import { ErrorCode, ExitCode, RetroflectError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { createHostBackend, describeWinDivertFilter, type BackendOptions } from '../packet-sources/registry.ts';
import { isAdministrator } from '../platform/privileges.ts';
import { suggestReflectAddress, validateReflectAddress } from '../platform/validate-address.ts';
import { ConfigStore, resolveConfigPath } from '../config/config-file.ts';
import { startControlServer } from '../control/server.ts';
import { resolveEndpoint, resolvePipeName } from '../control/pipe-path.ts';
import { printWarning as warn, reportError } from './output.ts';
import { printPlan, printRunBanner } from './run-output.ts';

export interface RunOptions {
  reflect?: string[];
  shield?: string[];
  config?: string | false;
  pipe?: string;
  dryRun?: boolean;
  device?: string;
  windivertDir?: string;
  priority?: string;
}

/** The persisted config (one store, shared with the control server) plus the command line's entries for this run. */
function loadStartConfig(opts: RunOptions): { config: InterceptConfig; store: ConfigStore } {
  const fromCli = buildInterceptConfig(opts.reflect ?? [], opts.shield ?? []);
  const configPath = opts.config === false ? null : resolveConfigPath(opts.config);
  const store = configPath ? ConfigStore.open(configPath) : ConfigStore.inMemory();
  const config = cloneInterceptConfig(store.config);
  for (const a of fromCli.reflectAddresses) if (!config.reflectAddresses.includes(a)) config.reflectAddresses.push(a);
  const have = new Set(config.shieldPorts.map(shieldKey));
  for (const p of fromCli.shieldPorts) if (!have.has(shieldKey(p))) config.shieldPorts.push(p);
  return { config, store };
}

/**
 * A run with no reflect address anywhere (config file or command line) picks the first documentation-range address
 * this host can use (IPv4 first), so a plain `retroflect run` works on any machine. It is persisted like
 * `address add` unless `persist` is false (dry run).
 */
async function pickReflectAddress(config: InterceptConfig, store: ConfigStore, persist: boolean): Promise<void> {
  if (config.reflectAddresses.length > 0) return;
  const picked = (await suggestReflectAddress(4)) ?? (await suggestReflectAddress(6));
  if (!picked) {
    warn('No reflect address is configured and no documentation-range address is usable here (is there a default route?). Add one with `retroflect address add <address>`.');
    return;
  }
  config.reflectAddresses.push(picked.address);
  if (persist) store.addAddresses([picked.address]);
  const where = store.path === null ? 'for this run only (no config file)' : persist ? `saved to ${store.path}` : `would be saved to ${store.path}`;
  console.log(`No reflect address configured: using ${picked.address} (${where}). ${picked.message}`);
}

/** Validate every address; at start a missing route is only a warning (at boot the network may not be up yet). */
async function validateAll(config: InterceptConfig): Promise<string[]> {
  const warnings: string[] = [];
  for (const a of config.reflectAddresses) {
    try {
      warnings.push(...(await validateReflectAddress(a)).warnings);
    } catch (err) {
      if (err instanceof RetroflectError && err.details?.rule === 'no-route') warnings.push(err.message);
      else throw err;
    }
  }
  return warnings;
}

export async function runEngine(opts: RunOptions): Promise<ExitCode> {
  const backendOptions: BackendOptions = {
    deviceName: opts.device,
    windivertDir: opts.windivertDir,
    priority: opts.priority === undefined ? undefined : Number(opts.priority),
  };
  let engine: Engine | null = null;
  try {
    const { config, store } = loadStartConfig(opts);
    const configPath = store.path;
    const pipeName = resolvePipeName(opts.pipe);
    const endpoint = resolveEndpoint(pipeName);
    const backend = await createHostBackend(backendOptions);

    if (opts.dryRun) {
      await pickReflectAddress(config, store, false);
      let warnings: string[] = [];
      let refusal: RetroflectError | null = null;
      try {
        warnings = await validateAll(config);
      } catch (err) {
        if (!(err instanceof RetroflectError)) throw err;
        refusal = err;
      }
      printPlan({ config, configPath, pipeName: endpoint.path, steps: backend.plan(config), windivertFilter: describeWinDivertFilter(config), warnings });
      if (refusal) return reportError(refusal, false);
      return ExitCode.OK;
    }

    if (!(await isAdministrator())) {
      throw new RetroflectError(ErrorCode.NOT_ADMIN, 'retroflect run must run as root (Linux) or Administrator (Windows).', {
        hint: process.platform === 'win32' ? 'Start it from an elevated prompt, or install it as a task with Install-Retroflect.' : 'Run it with sudo, or install the systemd unit.',
      });
    }
    await pickReflectAddress(config, store, true);
    for (const w of await validateAll(config)) warn(w);

    const started = await Engine.start({
      config,
      backend,
      validateAddress: validateReflectAddress,
      pipeName,
      configPath,
      log: (level, message) => (level === 'info' ? console.log(message) : warn(message)),
    });
    engine = started;
    const server = await startControlServer({ engine: started, pipeName, configStore: store, log: (m: string) => console.error(m) });

    const done = new Promise<ExitCode>((resolve) => {
      const shutdown = (why: string): void => {
        console.log(`Stopping (${why})...`);
        void server.close().finally(() => started.stop().then(() => resolve(ExitCode.OK), () => resolve(ExitCode.FAILURE)));
      };
      // Ctrl+C, service stop, terminal or console window closed, Ctrl+Break on Windows.
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const) process.once(sig, () => shutdown(sig));
      started.once('stopped', () => void server.close().finally(() => resolve(ExitCode.OK)));
      started.once('failed', (err: RetroflectError) => {
        reportError(err, false);
        void server.close().finally(() => resolve(ExitCode.BACKEND_UNAVAILABLE));
      });
    });
    printRunBanner(started.status(), endpoint.path, VERSION);
    console.log(`Ready. pid=${process.pid} pipe=${endpoint.path}`);
    return await done;
  } catch (err) {
    if (engine) await engine.stop().catch(() => undefined);
    return reportError(err, false);
  }
}
