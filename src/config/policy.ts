/**
 * Managed policy: entries an administrator sets outside retroflect (Linux: a read-only file in config.json's layout;
 * Windows: HKLM\SOFTWARE\Policies\Retroflect, read by platform/windows/policy-registry.ts). The engine merges them
 * into its running config (config/layers.ts), shows them with source `Policy`, and refuses to change them through
 * the pipe. A policy may also lock the engine (`lockChanges`, config-file.ts POLICY_LOCK_FIELD; Windows: the
 * LockChanges value): then every pipe change to addresses, shield ports and port maps is refused. This file holds
 * what every policy source shares: the contract, the path rule, and the file source.
 */
import { statSync } from 'node:fs';
import { emptyInterceptConfig, type InterceptConfig } from './intercept-config.ts';
import { loadConfigFile } from './config-file.ts';

/** How often the policy file's status is looked at (a change is live within about this long). */
export const POLICY_FILE_POLL_MS = 1000;

export interface PolicySource {
  /** What names the policy to an admin: a file path or a registry key. */
  readonly origin: string;
  /** The policy as it is now. No policy at all → an empty config. Invalid → throws E_CONFIG_INVALID (origin named). */
  read(): InterceptConfig;
  /**
   * Call `changed` (soon) after the policy may have changed, `failed` if watching stops working (the policy in
   * force then stays as last read); returns a function that stops watching.
   */
  watch(changed: () => void, failed: (err: Error) => void): () => void;
}

/** The Linux default; the Windows policy lives in the registry instead. */
export const DEFAULT_POLICY_PATH = '/etc/retroflect/policy.json';

/** `--policy` wins, then RETROFLECT_POLICY, then the default. */
export function resolvePolicyPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (option !== undefined && option !== '') return option;
  if (env.RETROFLECT_POLICY) return env.RETROFLECT_POLICY;
  return DEFAULT_POLICY_PATH;
}

/** What a file's status says of its contents ("none" when it is missing): a change to any part means "read again". */
function fileStamp(path: string): string {
  try {
    const st = statSync(path);
    return `${st.ino}/${st.size}/${st.mtimeMs}/${st.ctimeMs}`;
  } catch {
    return 'none';
  }
}

/** A policy file in config.json's layout (config-file.ts: same strict checks). Missing file = no policy. */
export class FilePolicySource implements PolicySource {
  /** The file's status when it was last read (taken just before, so a write during the read is seen again). */
  private readStamp: string | null = null;

  constructor(readonly origin: string) {}

  read(): InterceptConfig {
    this.readStamp = fileStamp(this.origin);
    return loadConfigFile(this.origin, {
      label: `Policy file ${this.origin}`,
      hint: 'The policy file is managed by your administrator: fix it there. Until then the last valid policy stays in force.',
      policy: true,
    }).config;
  }

  /**
   * Polls the file's status and compares it with its status when it was last read, not with the previous poll: a
   * change made between the last read and the first poll is seen too. Status, not a directory watch, catches edits
   * in place, atomic replacement (a new inode), creation and removal alike, on every file system.
   */
  watch(changed: () => void): () => void {
    const timer = setInterval(() => {
      if (fileStamp(this.origin) !== this.readStamp) changed();
    }, POLICY_FILE_POLL_MS);
    timer.unref();
    return () => clearInterval(timer);
  }
}

/** No policy source (tests, `--no-policy`): always empty. */
export const NO_POLICY: PolicySource = {
  origin: '(none)',
  read: () => emptyInterceptConfig(),
  watch: () => () => undefined,
};

/** Whether the policy file can be read at all (for messages; a missing file is simply no policy). */
export function policyFileExists(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
