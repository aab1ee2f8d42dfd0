/**
 * The managed policy as the control plane holds it: the entries in force (the last valid policy, less the addresses
 * the host refused), where they come from, and what is wrong with the policy as last read. config-changes.ts changes
 * it (one lock); the methods read it for sources and `status`.
 */
import { emptyInterceptConfig, cloneInterceptConfig, type InterceptConfig } from '../config/intercept-config.ts';
import type { RetroflectError } from '../errors.ts';
import type { PolicyStatus, PolicyProblem } from './protocol.ts';

export class PolicyState {
  private inForce: InterceptConfig = emptyInterceptConfig();
  private problemList: PolicyProblem[] = [];
  private changedAt: string | null = null;
  private lock = false;

  constructor(readonly origin: string) {}

  /** A copy of the entries in force. */
  get config(): InterceptConfig {
    return cloneInterceptConfig(this.inForce);
  }

  /** The policy in force locks the engine: no change through the pipe (config-changes.ts). */
  get locked(): boolean {
    return this.lock;
  }

  hasAddress(address: string): boolean {
    return this.inForce.reflectAddresses.includes(address);
  }

  /** New entries are in force; `problems` are what was left out of them (empty: all of the policy is in force). */
  adopt(config: InterceptConfig, problems: PolicyProblem[], locked: boolean): void {
    this.inForce = cloneInterceptConfig(config);
    this.lock = locked;
    this.problemList = problems;
    this.changedAt = new Date().toISOString();
  }

  /** The policy as read could not be used at all: the entries in force stay. */
  refuse(err: RetroflectError | Error): void {
    this.problemList = [problemOf(err)];
    this.changedAt = new Date().toISOString();
  }

  status(): PolicyStatus {
    const entries = this.inForce.reflectAddresses.length + this.inForce.shieldPorts.length;
    return {
      origin: this.origin,
      state: this.problemList.length ? 'invalid' : entries || this.lock ? 'applied' : 'none',
      reflectAddresses: [...this.inForce.reflectAddresses],
      shieldPorts: this.inForce.shieldPorts.map((p) => ({ ...p })),
      problems: this.problemList.map((p) => ({ ...p })),
      changedAt: this.changedAt,
      lockChanges: this.lock,
    };
  }
}

export function problemOf(err: RetroflectError | Error): PolicyProblem {
  return { code: 'code' in err && typeof err.code === 'string' ? err.code : 'E_INTERNAL', message: err.message };
}
