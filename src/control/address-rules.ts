/**
 * The host's rules for reflect addresses, as the control plane is handed them: `retroflect run` passes
 * platform/validate-address.ts, tests pass their own. The control layer never asks the platform itself.
 */
import type { RetroflectError } from '../errors.ts';

export interface AddressRules {
  /**
   * Host validation of an address about to be added; throws RetroflectError (E_INVALID_ADDRESS) when unusable. The
   * refusal's suggestion is never one of `configured` (the addresses already reflected or being added).
   */
  validate(address: string, configured: readonly string[]): Promise<{ warnings: string[] }>;
  /** Every rule `input` fails (for address.test); `address` is its canonical form, null when it is no address. */
  check(input: string): Promise<{ address: string | null; refusals: RetroflectError[]; warnings: string[] }>;
  /** A usable address of `family` that is not in `exclude`, or null when none is. */
  suggest(family: 4 | 6, exclude: readonly string[]): Promise<{ address: string; message: string } | null>;
}
