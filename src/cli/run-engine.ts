/**
 * `retroflect run`: load the persisted config, add the command line's entries for this run, check everything,
 * start the engine and its control pipe, and stay up until Ctrl+C, SIGTERM, console close or a `stop` request.
 *
 * Readiness contract (tests and Start-Retroflect rely on it): once the pipe answers, a line starting with `Ready.`
 * is printed on stdout. Exit codes are `ExitCode` (src/errors.ts), listed in README.md.
 */
import {
  addReflectAddresses,
  addShieldPorts,
  buildInterceptConfig,
  cloneInterceptConfig,
  type InterceptConfig,
} from '../config/intercept-config.ts';
import { Engine } from '../engine/engine.ts';
import { ErrorCode, ExitCode, RetroflectError } from '../errors.ts';
import { VERSION } from '../version.ts';
import {
  createHostBackend,
  describeWinDivertFilter,
  LINUX_BACKENDS,
  type BackendOptions,
  type LinuxBackend,
} from '../packet-sources/registry.ts';
import { isAdministrator } from '../platform/privileges.ts';
import { hostAddressRules, suggestReflectAddress, validateReflectAddress } from '../platform/validate-address.ts';
import { removeOrphanTempFiles } from '../config/atomic-save.ts';
import { resolveConfigPath } from '../config/config-path.ts';
import { FilePolicySource, resolvePolicyPath, type PolicySource } from '../config/policy.ts';
import { ConfigStore } from '../config/config-store.ts';
import { checkEndpointFree } from '../control/endpoint-listen.ts';
import { startControlServer, type ControlServer } from '../control/server.ts';
import { resolveEndpoint, resolvePipeName } from '../control/endpoint-address.ts';
import { printWarning as warn, reportError } from './output.ts';
import { printPlan, printRunBanner } from './run-output.ts';
import { EngineEvent } from '../platform/events.ts';
import { EngineLog } from './engine-log.ts';
import { failureEvent, startedText, stoppedText, watchEngineEvents } from './engine-events.ts';
import { parseLogSize } from './log-options.ts';
import { underSystemd } from '../platform/journal.ts';
import { watchStopSignals, type StopSignals } from './stop-signals.ts';

export interface RunOptions {
  reflect?: string[];
  shield?: string[];
  config?: string | false;
  pipe?: string;
  dryRun?: boolean;
  device?: string;
  backend?: string;
  windivertDir?: string;
  priority?: string;
  /** Managed policy file (Linux default /etc/retroflect/policy.json; Windows default: the registry policy). */
  policy?: string;
  /** Append the engine's events to this file, size capped and rotated (platform/log-file.ts). */
  logFile?: string;
  /** Cap of the log file: bytes, or with a K/M/G suffix. */
  logSize?: string;
  /** Windows: run as the service (cli/service-host.ts). */
  service?: boolean;
}

/**
 * What hosts the engine when it is not a console: the Windows service (cli/service-host.ts). The host asks for a
 * stop with a reason, and hears when the engine is ready and when its cleanup starts.
 */
export interface EngineHost {
  readonly stopRequest: Promise<string>;
  ready(): void;
  stopping(): void;
}

/** Why the engine ends, said in the `stopped` event: the first cause wins (cleanup then emits 'stopped' too). */
class StopReason {
  private cause: string | null = null;
  decide(why: string): void {
    this.cause ??= why;
  }
  get why(): string {
    return this.cause ?? 'it could not start';
  }
}

/** Where managed policy is read: `--policy`/RETROFLECT_POLICY name a file; otherwise the platform's place. */
async function policySource(opts: RunOptions): Promise<PolicySource> {
  const named = opts.policy || process.env.RETROFLECT_POLICY;
  if (process.platform === 'win32' && !named) {
    const { RegistryPolicySource } = await import('../platform/windows/policy-registry.ts');
    return new RegistryPolicySource();
  }
  return new FilePolicySource(resolvePolicyPath(opts.policy));
}

/** The persisted config (one store, shared with the control server) plus the command line's entries for this run. */
function loadStartConfig(opts: RunOptions): { config: InterceptConfig; store: ConfigStore; leftovers: string[] } {
  const fromCli = buildInterceptConfig(opts.reflect ?? [], opts.shield ?? []);
  // An empty path is a mistake (an unset variable in a script), not a request for "no config": changes would
  // silently not persist while `address add` still reports success. --no-config says that explicitly.
  if (opts.config === '') throw emptyConfigPath('--config ""');
  if (opts.config === undefined && process.env.RETROFLECT_CONFIG === '') throw emptyConfigPath('RETROFLECT_CONFIG is set but empty, so it');
  const configPath = opts.config === false ? null : resolveConfigPath(opts.config);
  const store = configPath ? ConfigStore.open(configPath) : ConfigStore.inMemory();
  const leftovers = configPath ? removeOrphanTempFiles(configPath) : [];
  const config = cloneInterceptConfig(store.config);
  addReflectAddresses(config, fromCli.reflectAddresses);
  addShieldPorts(config, fromCli.shieldPorts);
  return { config, store, leftovers };
}

function emptyConfigPath(what: string): RetroflectError {
  return new RetroflectError(ErrorCode.USAGE, `${what} names no config file.`, {
    hint: 'Give a path with --config <path>, or use --no-config to run without persisting changes.',
  });
}

/**
 * A run with a config file but no reflect address anywhere (file or command line) picks the first documentation-range
 * address this host can use (IPv4 first), so a plain `retroflect run` works on any machine. It is persisted like
 * `address add` unless `persist` is false (dry run). `--no-config` means "exactly what the command line says", so
 * nothing is picked there (a shield-only run stays shield-only).
 */
async function pickReflectAddress(config: InterceptConfig, store: ConfigStore, persist: boolean): Promise<void> {
  if (config.reflectAddresses.length > 0 || store.path === null) return;
  const picked = (await suggestReflectAddress(4)) ?? (await suggestReflectAddress(6));
  if (!picked) {
    warn('No reflect address is configured and no documentation-range address is usable here (is there a default route?). Add one with `retroflect address add <address>`.');
    return;
  }
  addReflectAddresses(config, [picked.address]);
  if (persist) store.addAddresses([picked.address]);
  const where = persist ? `saved to ${store.path}` : `would be saved to ${store.path}`;
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

export async function runEngine(opts: RunOptions, host?: EngineHost): Promise<ExitCode> {
  const signals = watchStopSignals();
  let engine: Engine | null = null;
  let server: ControlServer | null = null;
  let code: ExitCode;
  const reason = new StopReason();
  let log: EngineLog | null = null;
  try {
    const logBytes = parseLogSize(opts.logSize);
    log = opts.dryRun ? null : await EngineLog.open({ logFile: opts.logFile, logBytes, eventLog: true });
    code = await runUntilStopped(opts, signals, log, reason, host, (e) => (engine = e), (s) => (server = s));
  } catch (err) {
    code = reportError(err, false);
    if (log) {
      const { kind, text } = failureEvent(err, false);
      log.event(kind, text, { console: false });
    }
  }
  host?.stopping();
  // Cleanup runs to its end whatever arrives meanwhile: the signal handlers stay installed until it is done.
  const started = engine as Engine | null;
  const listening = server as ControlServer | null;
  // Captures end first, while their connections are open: each client gets its ring's last records and capture.end;
  // closing the server then lets every connection send what it holds before it goes.
  await started?.endCaptures();
  if (listening) await listening.close().catch(() => undefined);
  if (started) {
    try {
      await started.stop();
    } catch (err) {
      reportError(err, false);
      log?.event(EngineEvent.BACKEND_FAILED, `Cleanup failed: ${(err as Error).message}`, { console: false });
      if (code === ExitCode.OK) code = ExitCode.FAILURE;
    }
  }
  log?.event(EngineEvent.STOPPED, stoppedText(reason.why, code));
  log?.close();
  signals.finish(code);
  return code;
}

async function runUntilStopped(
  opts: RunOptions,
  signals: StopSignals,
  log: EngineLog | null,
  reason: StopReason,
  host: EngineHost | undefined,
  onEngine: (e: Engine) => void,
  onServer: (s: ControlServer) => void,
): Promise<ExitCode> {
  const backendOptions: BackendOptions = {
    deviceName: opts.device,
    backend: parseBackendOption(opts.backend),
    onFallback: (reason) => warn(`The ebpf backend cannot run here, so the engine uses tun: ${reason}`),
    windivertDir: opts.windivertDir,
    priority: opts.priority === undefined ? undefined : Number(opts.priority),
  };
  const { config, store, leftovers } = loadStartConfig(opts);
  const configPath = store.path;
  const pipeName = resolvePipeName(opts.pipe);
  const endpoint = resolveEndpoint(pipeName);

  if (opts.dryRun) {
    const backend = await createHostBackend(backendOptions);
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
  // Picked once root is known: `auto` (the default) loads the ebpf program to see whether it can run, which needs root.
  const backend = await createHostBackend(backendOptions);
  for (const f of leftovers) console.log(`Removed ${f}, a temp file left by a killed run.`);
  await pickReflectAddress(config, store, true);
  for (const w of await validateAll(config)) warn(w);
  // An engine already on this pipe is found before anything is touched (exit 8, the first engine undisturbed).
  await checkEndpointFree(endpoint);
  // Nothing on the host has been touched yet: a signal so far needs no cleanup.
  if (signals.received) return stoppingBecause(signals.received, reason);

  // From here every exit path goes through runEngine's cleanup. A signal during start lets start finish (or fail
  // and undo itself), then stops at once.
  const started = await Engine.start({
    config,
    backend,
    pipeName,
    configPath,
    runsAs: opts.service ? 'service' : underSystemd() ? 'unit' : 'console',
    log: (level, message) => {
      if (log) log.note(level === 'info' ? 'info' : level === 'warn' ? 'warning' : 'error', message);
      else if (level === 'info') console.log(message);
      else warn(message);
    },
  });
  onEngine(started);
  if (log) watchEngineEvents(started, log);
  const ended = new Promise<ExitCode>((resolve) => {
    void signals.first.then((sig) => resolve(stoppingBecause(sig, reason)));
    void host?.stopRequest.then((why) => {
      reason.decide(why);
      console.log(`Stopping (${why})...`);
      resolve(ExitCode.OK);
    });
    started.once('stopped', () => {
      reason.decide('a stop request through the control pipe');
      resolve(ExitCode.OK);
    });
    started.once('failed', (err: RetroflectError) => {
      reportError(err, false);
      reason.decide('the packet backend failed');
      const { text } = failureEvent(err, true);
      log?.event(EngineEvent.BACKEND_FAILED, text, { console: false });
      resolve(ExitCode.BACKEND_UNAVAILABLE);
    });
  });
  if (!signals.received) {
    const policy = await policySource(opts);
    const server = await startControlServer({
      engine: started,
      pipeName,
      configStore: store,
      policy,
      addressRules: reportingRefusals(log),
      log: (m: string) => console.error(m),
    });
    onServer(server);
    if (!signals.received) {
      printRunBanner(started.status(), endpoint.path, VERSION);
      log?.event(EngineEvent.STARTED, startedText(started.status(), endpoint.path));
      console.log(`Ready. pid=${process.pid} pipe=${endpoint.path}`);
      host?.ready();
    }
  }
  return await ended;
}

function parseBackendOption(value: string | undefined): LinuxBackend | undefined {
  if (value === undefined) return undefined;
  if ((LINUX_BACKENDS as readonly string[]).includes(value)) return value as LinuxBackend;
  throw new RetroflectError(ErrorCode.USAGE, `--backend must be one of ${LINUX_BACKENDS.join(', ')}, not '${value}'.`, {
    hint: 'Leave it out (or auto) for ebpf where it loads, else tun.',
  });
}

function stoppingBecause(sig: NodeJS.Signals, reason: StopReason): ExitCode {
  reason.decide(`signal ${sig}`);
  console.log(`Stopping (${sig})...`);
  return ExitCode.OK;
}

/** This host's address rules; an address a client asks for and the host check refuses is also an event. */
function reportingRefusals(log: EngineLog | null): typeof hostAddressRules {
  return {
    ...hostAddressRules,
    validate: async (address, configured) => {
      try {
        return await hostAddressRules.validate(address, configured);
      } catch (err) {
        const { kind, text } = failureEvent(err, true);
        log?.event(kind, text);
        throw err;
      }
    },
  };
}
