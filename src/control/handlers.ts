/**
 * Answers one request: the access gate (everything but hello needs an authenticated session), then the method's
 * handler from the method table (methods/*.ts, typed against protocol.ts's `MethodResults`), or E_UNKNOWN_METHOD.
 * Transport-free (connection.ts owns framing and the socket; it exposes what a method may do to it as a `Session`),
 * so every rule is the same for every client. Changes to addresses and ports go through config-changes.ts (one lock).
 */
import type { ConfigStore } from '../config/config-store.ts';
import { accessDenied } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import type { AddressRules } from './address-rules.ts';
import { ConfigChanges } from './config-changes.ts';
import { PolicyState } from './policy-state.ts';
import type { ControlEngine } from './control-engine.ts';
import { addressMethods } from './methods/addresses.ts';
import { engineMethods } from './methods/engine-info.ts';
import type { Params } from './methods/params.ts';
import { sessionMethods } from './methods/session-methods.ts';
import { shieldMethods } from './methods/shield.ts';
import type { MethodContext, MethodTable } from './methods/table.ts';
import { METHODS, type MethodName } from './protocol.ts';
import type { Session } from './session.ts';

/** Every method of the protocol, each exactly once (the type says so). */
const METHOD_TABLE: MethodTable = { ...sessionMethods, ...engineMethods, ...addressMethods, ...shieldMethods };

function isMethodName(method: string): method is MethodName {
  // Own keys only: 'toString' or '__proto__' are no methods.
  return Object.hasOwn(METHOD_TABLE, method);
}

export class MethodHandlers {
  private readonly context: Omit<MethodContext, 'session'>;
  /** The one place changes go through (the policy watcher uses it too). */
  readonly changes: ConfigChanges;

  constructor(engine: ControlEngine, store: ConfigStore, opts: { addressRules: AddressRules; policy?: PolicyState; log?: (message: string) => void }) {
    const log = opts.log ?? (() => undefined);
    const validate = (address: string, configured: readonly string[]) => opts.addressRules.validate(address, configured);
    this.changes = new ConfigChanges(engine, store, validate, opts.policy ?? new PolicyState('(none)'), log);
    this.context = { engine, store, changes: this.changes, addressRules: opts.addressRules, log };
  }

  /** Answer one request. Everything but hello needs an authenticated session. */
  async handle(method: string, params: Params, session: Session): Promise<unknown> {
    if (method !== 'hello' && !session.authenticated) {
      throw accessDenied("Say 'hello' with the access token first.", 'Send {"method":"hello","params":{"protocol":1,"token":"..."}} as the first request.');
    }
    if (!isMethodName(method)) {
      throw new RetroflectError(ErrorCode.UNKNOWN_METHOD, `Unknown method '${method}'.`, {
        hint: `Methods: ${METHODS.join(', ')}.`,
        details: { method },
      });
    }
    const handler = METHOD_TABLE[method] as (params: Params, ctx: MethodContext) => unknown;
    return handler(params, { ...this.context, session });
  }
}
