/**
 * The shape of the method table: one handler per method of protocol.ts's `MethodResults`, each returning that
 * method's result type, so a method missing from the table, a stray one, or a wrong result is a compile error.
 * Handlers get their raw params (they check them: see params.ts) and what a method may use (`MethodContext`).
 */
import type { ConfigStore } from '../../config/config-store.ts';
import type { AddressRules } from '../address-rules.ts';
import type { ConfigChanges } from '../config-changes.ts';
import type { ControlEngine } from '../control-engine.ts';
import type { Session } from '../session.ts';
import type { MethodName, MethodResults } from '../protocol.ts';
import type { Params } from './params.ts';

/** What a method may use: the engine, the persisted config, the one place for changes, the host's address rules. */
export interface MethodContext {
  readonly engine: ControlEngine;
  readonly store: ConfigStore;
  readonly changes: ConfigChanges;
  readonly addressRules: AddressRules;
  readonly log: (message: string) => void;
  /** The connection the request came on. */
  readonly session: Session;
}

export type MethodHandler<M extends MethodName> = (params: Params, ctx: MethodContext) => MethodResults[M] | Promise<MethodResults[M]>;

/** Every method, each with its handler. */
export type MethodTable = { readonly [M in MethodName]: MethodHandler<M> };

/** Part of the table (one area's file); the parts are put together in handlers.ts. */
export type MethodTablePart<K extends MethodName> = { readonly [M in K]: MethodHandler<M> };
