/**
 * The AddressRules control-server tests hand over (control/address-rules.ts). Host validation on add is not what
 * those tests are about, so every syntactically valid address is usable (the rules themselves are tested in
 * test/platform/validate-address.test.ts); address.test reports this host's real rules, as `retroflect run` does.
 */
import type { AddressRules } from '../../src/control/address-rules.ts';
import { hostAddressRules } from '../../src/platform/validate-address.ts';

export const testAddressRules: AddressRules = {
  validate: async () => ({ warnings: [] }),
  check: hostAddressRules.check,
  suggest: hostAddressRules.suggest,
};
