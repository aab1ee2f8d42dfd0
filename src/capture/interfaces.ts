/**
 * The interface table of one capture: which pcapng interface (id, name, description) a packet belongs to. Every
 * capture starts with the backend's own interface, outbound then inbound (ids 0 and 1); packets through other
 * interfaces (TUN: shielded packets arriving on eth0; WinDivert: each IfIdx) add theirs as they come, because pcapng
 * counts interface ids in the order their blocks appear.
 */
import type { CaptureInterface } from './pcapng.ts';

export type CaptureDirection = CaptureInterface['direction'];

/** The pcapng name of interface `name` in one direction: "rflct0 outbound". */
function interfaceLabel(name: string, direction: CaptureDirection): string {
  return `${name} ${direction}`;
}

/** A capture's pcapng interface for packets through `name` in one direction. */
function captureInterface(name: string, direction: CaptureDirection, backend: string): CaptureInterface {
  return direction === 'outbound'
    ? { name: interfaceLabel(name, direction), description: `packets this host sent through ${name}, as ${backend} handed them to retroflect (after reflection)`, direction }
    : { name: interfaceLabel(name, direction), description: `packets that arrived on ${name} from other hosts, as retroflect saw them`, direction };
}

export class CaptureInterfaceTable {
  /** The interfaces every capture starts with (id = index): the backend's own, outbound and inbound. */
  readonly initial: readonly CaptureInterface[];
  /** pcapng interface id by interface label ("rflct0 outbound"). */
  private readonly ids = new Map<string, number>();

  /** `backend`: the backend's kind; `ownName`: its name for its own interface (interface index 0). */
  constructor(
    private readonly backend: string,
    ownName: string,
  ) {
    this.initial = [captureInterface(ownName, 'outbound', backend), captureInterface(ownName, 'inbound', backend)];
    this.initial.forEach((itf, id) => this.ids.set(itf.name, id));
  }

  /** The id of interface `name` in `direction`, and the interface when this is its first packet (its block is due). */
  idOf(name: string, direction: CaptureDirection): { id: number; added: CaptureInterface | null } {
    const id = this.ids.get(interfaceLabel(name, direction)); // per packet: one map lookup, nothing more
    if (id !== undefined) return { id, added: null };
    const added = captureInterface(name, direction, this.backend);
    const next = this.ids.size;
    this.ids.set(added.name, next);
    return { id: next, added };
  }
}
