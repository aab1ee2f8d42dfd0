/**
 * What every doctor check reads: is this process privileged, which config applies (the running engine's, else the
 * config file's), and the running engine's status and stats when one answers. Gathered once per run.
 */
import { ControlClient } from '../control/client.ts';
import { emptyInterceptConfig, type InterceptConfig } from '../config/intercept-config.ts';
import { loadConfigFile } from '../config/config-file.ts';
import { resolveConfigPath } from '../config/config-path.ts';
import type { EngineStats, EngineStatus } from '../engine/types.ts';
import { isRetroflectError, type RetroflectError } from '../errors.ts';
import { isAdministrator } from '../platform/privileges.ts';

export interface DoctorOptions {
  pipe?: string;
  /** Config file to read when no engine runs (default: the engine's default path). */
  config?: string;
  /** Fix what can be fixed safely (a stale WinDivert driver entry). */
  repair?: boolean;
  /** Directory of WinDivert.dll and WinDivert64.sys (Windows; default: beside the executable, as `run` looks). */
  windivertDir?: string;
}

export interface DoctorContext {
  readonly platform: NodeJS.Platform;
  readonly options: DoctorOptions;
  readonly admin: boolean;
  /** The addresses, shield ports and port maps to check. */
  readonly config: InterceptConfig;
  /** Where `config` came from. */
  readonly configSource:
    | { kind: 'engine' }
    | { kind: 'file'; path: string; existed: boolean }
    | { kind: 'none'; problem: string };
  /** The running engine's status, or null (then `engineProblem` says why). */
  readonly engine: EngineStatus | null;
  readonly engineProblem: RetroflectError | null;
  /** The engine's stats; read last (on Linux a failed read makes the engine repair its host state first). */
  stats(): Promise<EngineStats | null>;
  close(): void;
}

/** How long the doctor waits for an engine before it says none runs. */
export const DOCTOR_CONNECT_TIMEOUT_MS = 2000;

export async function gatherContext(options: DoctorOptions,
  platform: NodeJS.Platform = process.platform): Promise<DoctorContext> {
  const admin = await isAdministrator(platform);
  let client: ControlClient | null = null;
  let engine: EngineStatus | null = null;
  let engineProblem: RetroflectError | null = null;
  try {
    client = await ControlClient.connect({ pipe: options.pipe, timeoutMs: DOCTOR_CONNECT_TIMEOUT_MS,
      clientName: 'doctor' });
    engine = await client.call('status', {});
  } catch (err) {
    if (!isRetroflectError(err)) throw err;
    engineProblem = err;
    client?.close();
    client = null;
  }
  let config: InterceptConfig = emptyInterceptConfig();
  let configSource: DoctorContext['configSource'];
  if (engine) {
    config = { reflectAddresses: engine.reflectAddresses, shieldPorts: engine.shieldPorts,
      ...(engine.portMaps?.length ? { portMaps: engine.portMaps } : {}) };
    configSource = { kind: 'engine' };
  } else {
    try {
      const loaded = loadConfigFile(resolveConfigPath(options.config));
      config = loaded.config;
      configSource = { kind: 'file', path: loaded.path, existed: loaded.existed };
    } catch (err) {
      if (!isRetroflectError(err)) throw err;
      configSource = { kind: 'none', problem: `${err.message}${err.hint ? ` ${err.hint}` : ''}` };
    }
  }
  let statsRead: Promise<EngineStats | null> | null = null;
  const connected = client;
  return {
    platform,
    options,
    admin,
    config,
    configSource,
    engine,
    engineProblem,
    stats: () => (statsRead ??= connected ? connected.call('stats', {}).catch(() => null) : Promise.resolve(null)),
    close: () => connected?.close(),
  };
}
