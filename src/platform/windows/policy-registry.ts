/**
 * The Windows managed policy: HKLM\SOFTWARE\Policies\Retroflect, as Group Policy and Intune write it from the
 * ADMX template (policy/retroflect.admx). Layout (docs/windows.md):
 *
 *   ...\Retroflect\ReflectAddresses   one value per address: name = the address, REG_SZ data = its port maps
 *                                     ("80=8080/tcp 443=8443", separated by spaces, commas or semicolons; "" = none)
 *   ...\Retroflect\ShieldPorts        one REG_SZ value per entry, any name: "8080", "8080/tcp", "53/udp"
 *   ...\Retroflect  LockChanges       REG_DWORD 1: every change through the pipe is refused (0 or absent: not locked)
 *
 * Read into config.json's layout and checked by the same rules (config-file.ts), so both platforms judge policy alike.
 * Watched with RegNotifyChangeKeyValue on the deepest key that exists (the policy key may be created later).
 */
import { parseConfigObject } from '../../config/config-file.ts';
import type { InterceptConfig } from '../../config/intercept-config.ts';
import type { PolicySource } from '../../config/policy.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { RegistryKey, type RegistryValue } from './registry.ts';
import { notifyOnChange, RegistryEvent } from './registry-watch.ts';

export const POLICY_KEY = 'SOFTWARE\\Policies\\Retroflect';
export const POLICY_ADDRESSES_KEY = `${POLICY_KEY}\\ReflectAddresses`;
export const POLICY_SHIELD_KEY = `${POLICY_KEY}\\ShieldPorts`;
/** The value under POLICY_KEY that locks the engine (config-file.ts POLICY_LOCK_FIELD in a policy file). */
export const POLICY_LOCK_VALUE = 'LockChanges';
/** Every value the engine reads, for the ADMX check (test/wine/policy.test.ts). */
export const POLICY_VALUES = {
  addresses: { key: POLICY_ADDRESSES_KEY, kind: 'name=address, data=port maps' },
  shieldPorts: { key: POLICY_SHIELD_KEY, kind: 'data=port spec' },
  lockChanges: { key: POLICY_KEY, valueName: POLICY_LOCK_VALUE, kind: 'REG_DWORD 0/1' },
} as const;
/** How long one wait for a registry change lasts before the watch looks whether it was stopped. */
const WAIT_SLICE_MS = 1000;

const ORIGIN = `HKLM\\${POLICY_KEY}`;

function invalid(problem: string): RetroflectError {
  return new RetroflectError(ErrorCode.CONFIG_INVALID, `Policy ${ORIGIN} is invalid: ${problem}`, {
    hint: 'The policy is managed by your administrator (Group Policy or Intune): fix it there. ' +
      'Until then the last valid policy stays in force.',
    details: { path: ORIGIN },
  });
}

function valuesOf(path: string): RegistryValue[] {
  const key = RegistryKey.openLocalMachine(path);
  if (!key) return [];
  try {
    return key.values();
  } finally {
    key.close();
  }
}

function text(v: RegistryValue, where: string): string {
  if (typeof v.data !== 'string') throw invalid(`value '${v.name}' under ${where} must be a string (REG_SZ).`);
  return v.data;
}

/** LockChanges as the policy file's field: absent → undefined; a REG_DWORD 0 or 1 → false or true. */
function lockOf(lock: RegistryValue | undefined): boolean | undefined {
  if (!lock) return undefined;
  if (lock.data !== 0 && lock.data !== 1) throw invalid(`value '${POLICY_LOCK_VALUE}' must be a REG_DWORD of 0 or 1.`);
  return lock.data === 1;
}

/** The registry's policy in config.json's layout (exported for tests); `top`: the values of the policy key itself. */
export function policyObject(addresses: RegistryValue[], shieldPorts: RegistryValue[],
  top: RegistryValue[] = []): unknown {
  const lock = lockOf(top.find((v) => v.name.toLowerCase() === POLICY_LOCK_VALUE.toLowerCase()));
  return {
    ...(lock === undefined ? {} : { lockChanges: lock }),
    schemaVersion: 2,
    reflectAddresses: addresses.map((v) => {
      const maps = text(v, 'ReflectAddresses').split(/[\s,;]+/).filter(Boolean);
      return { address: v.name, portMaps: maps };
    }),
    shieldPorts: shieldPorts.map((v) => text(v, 'ShieldPorts').trim()),
  };
}

export class RegistryPolicySource implements PolicySource {
  readonly origin = ORIGIN;

  read(): InterceptConfig {
    let raw: unknown;
    try {
      raw = policyObject(valuesOf(POLICY_ADDRESSES_KEY), valuesOf(POLICY_SHIELD_KEY), valuesOf(POLICY_KEY));
    } catch (err) {
      if (err instanceof RetroflectError) throw err;
      throw invalid((err as Error).message);
    }
    return parseConfigObject(raw, ORIGIN, { label: `Policy ${ORIGIN}`, hint: invalid('').hint!, policy: true });
  }

  watch(changed: () => void, failed: (err: Error) => void): () => void {
    let stopped = false;
    void (async () => {
      const event = new RegistryEvent();
      try {
        while (!stopped) {
          // The deepest existing key: once the policy key appears, the next round watches it.
          let key: RegistryKey | null = null;
          for (const path of [POLICY_KEY, 'SOFTWARE\\Policies', 'SOFTWARE']) {
            if (!key) key = RegistryKey.openLocalMachine(path);
          }
          if (!key) return;
          try {
            notifyOnChange(key, event);
            let signalled = false;
            while (!stopped && !signalled) signalled = await event.wait(WAIT_SLICE_MS);
            if (signalled && !stopped) changed();
          } finally {
            key.close();
          }
        }
      } catch (err) {
        failed(err as Error);
      } finally {
        event.close();
      }
    })();
    return () => {
      stopped = true;
    };
  }
}
