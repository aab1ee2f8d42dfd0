/**
 * The answer to "could this be a reflect address here?" (`address.test`, `retroflect address test`,
 * Test-ReflectAddress): every rule it fails, warnings, whether it is configured, and a usable address of the same
 * family when it is not. Built here once, for the engine's method and for the CLI when no engine runs.
 */
import { addressFamily } from '../config/intercept-config.ts';
import { ErrorCode, isRetroflectError } from '../errors.ts';
import { checkReflectAddress, suggestReflectAddress } from '../platform/validate-address.ts';
import type { AddressTestResult } from './protocol.ts';

export type AddressChecker = (input: string) => ReturnType<typeof checkReflectAddress>;
export type AddressSuggestion = (family: 4 | 6, exclude: readonly string[]) => Promise<{ address: string; message: string } | null>;

export async function addressTestResult(
  input: string,
  configured: readonly string[],
  check: AddressChecker = (a) => checkReflectAddress(a),
  suggest: AddressSuggestion = (family, exclude) => suggestReflectAddress(family, undefined, exclude),
): Promise<AddressTestResult> {
  const r = await check(input);
  const valid = r.address !== null && r.refusals.length === 0;
  const reasons = r.refusals.map((e) => ({
    code: isRetroflectError(e) ? e.code : ErrorCode.INVALID_ADDRESS,
    rule: typeof e.details?.rule === 'string' ? e.details.rule : null,
    message: e.message,
    hint: e.hint ?? null,
  }));
  const family = r.address !== null ? addressFamily(r.address) : 4;
  return {
    input,
    address: r.address,
    valid,
    configured: r.address !== null && configured.includes(r.address),
    warnings: r.warnings,
    reasons,
    suggestion: valid ? null : await suggest(family, configured),
  };
}
