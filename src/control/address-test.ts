/**
 * The answer to "could this be a reflect address here?" (`address.test`, `retroflect address test`,
 * Test-ReflectAddress): every rule it fails, warnings, whether it is configured, and a usable address of the same
 * family when it is not. Built here once, for the engine's method and for the CLI when no engine runs; both hand in
 * the host's rules (AddressRules).
 */
import { addressFamily } from '../config/intercept-config.ts';
import { ErrorCode, isRetroflectError } from '../errors.ts';
import type { AddressRules } from './address-rules.ts';
import type { AddressTestResult } from './protocol.ts';

export async function addressTestResult(input: string, configured: readonly string[], rules: Pick<AddressRules,
  'check' | 'suggest'>): Promise<AddressTestResult> {
  const r = await rules.check(input);
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
    suggestion: valid ? null : await rules.suggest(family, configured),
  };
}
