/**
 * `retroflect address test` when no engine runs: the engine's own checks (control/address-test.ts) run here, on this
 * host, with the config file's addresses as "configured". Says so on stderr, so a script's stdout stays one document.
 */
import { ControlClient } from '../control/client.ts';
import { addressTestResult } from '../control/address-test.ts';
import type { AddressTestResult } from '../control/protocol.ts';
import { loadConfigFile } from '../config/config-file.ts';
import { resolveConfigPath } from '../config/config-path.ts';
import { ErrorCode, isRetroflectError } from '../errors.ts';
import { hostAddressRules } from '../platform/validate-address.ts';

/** How long to wait for an engine before testing without one. */
const PROBE_TIMEOUT_MS = 2000;

/** True when no engine answered and the addresses were tested here (and printed); false to ask the engine. */
export async function testAddressesOffline(addrs: string[], pipe: string | undefined,
  print: (r: AddressTestResult[]) => void): Promise<boolean> {
  try {
    (await ControlClient.connect({ pipe, timeoutMs: PROBE_TIMEOUT_MS })).close();
    return false;
  } catch (err) {
    // Anything but 'no engine' is for the engine path to report.
    if (!isRetroflectError(err) || err.code !== ErrorCode.ENGINE_NOT_RUNNING) return false;
  }
  let configured: string[] = [];
  try {
    configured = loadConfigFile(resolveConfigPath(undefined)).config.reflectAddresses;
  } catch {
    // an unreadable config file only means nothing counts as configured
  }
  process.stderr.write('No engine is running: tested on this host without one.\n');
  const results: AddressTestResult[] = [];
  for (const a of addrs) results.push(await addressTestResult(a, configured, hostAddressRules));
  print(results);
  return true;
}
