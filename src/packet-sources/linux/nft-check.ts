/**
 * Is our nft table still whole? Compares the table as the kernel has it (`nft -j list table`) with what the engine
 * put there: every chain, every rule in order, every set and named counter, and every set's elements against the
 * config. A table someone deleted, replaced, or edited in part (a shield rule deleted, a set flushed, an element
 * removed or added) differs, and the engine restores it whole (nftables.ts installShield).
 *
 * Rules are compared with the table as nft listed it right after the engine installed it (the shape), since the
 * kernel's JSON form of a rule is nft's to choose; elements are compared with the config, since live changes edit
 * them and nothing else.
 */
import ipaddr from 'ipaddr.js';
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { runCommand } from '../../platform/linux/command.ts';
import { NFT_FAMILY, NFT_TABLE, shieldSetMembers } from '../../platform/linux/nftables.ts';

/** Our table without its elements and counter values, as one comparable string. */
export type TableShape = string;

interface NftListing {
  nftables: Record<string, Record<string, unknown>>[];
}

/**
 * Everything but elements and counts: named counters, sets (name, type, flags), chains (hook, priority, policy),
 * rules in order.
 */
function shapeOf(doc: NftListing): TableShape {
  const counters: string[] = [];
  const sets: unknown[] = [];
  const chains: unknown[] = [];
  const rules: unknown[] = [];
  for (const obj of doc.nftables) {
    if (obj.counter) counters.push(String(obj.counter.name));
    else if (obj.set) sets.push([obj.set.name, obj.set.type, obj.set.flags ?? []]);
    else if (obj.chain) chains.push([obj.chain.name, obj.chain.type, obj.chain.hook, obj.chain.prio, obj.chain.policy]);
    else if (obj.rule) rules.push([obj.rule.chain, obj.rule.expr]);
  }
  const byName = (a: unknown, b: unknown) => JSON.stringify(a).localeCompare(JSON.stringify(b));
  return JSON.stringify({ counters: counters.sort(), sets: sets.sort(byName), chains: chains.sort(byName), rules });
}

/** One element as text, the same for nft's listing and the config (addresses in one canonical form). */
function elementKey(value: unknown): string {
  const text = String(value);
  return ipaddr.isValid(text) ? ipaddr.parse(text).toString() : text;
}

/** Each set's elements as nft lists them: a bare value, or { elem: { val, counter } } for sets with counters. */
function elementsOf(doc: NftListing): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const obj of doc.nftables) {
    if (!obj.set) continue;
    const elems = (obj.set.elem as unknown[] | undefined) ?? [];
    const value = (e: unknown) => (typeof e === 'object' && e !== null && 'elem' in e ? (e as { elem: { val: unknown } }).elem.val : e);
    const keys = elems.map((e) => elementKey(value(e)));
    out.set(String(obj.set.name), keys.sort());
  }
  return out;
}

/** The table as the kernel has it, or null when there is none. */
async function listTable(): Promise<NftListing | null> {
  try {
    const { stdout } = await runCommand({ file: 'nft', args: ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE] });
    return JSON.parse(stdout) as NftListing;
  } catch (err) {
    const missing = err instanceof RetroflectError && /No such file or directory/i.test(String(err.details?.stderr ?? ''));
    if (missing) return null;
    throw err;
  }
}

/** The shape of the table just installed (call right after installShield). */
export async function installedShape(): Promise<TableShape> {
  const doc = await listTable();
  if (!doc) {
    const what = `The nft table ${NFT_FAMILY} ${NFT_TABLE} vanished right after it was installed.`;
    throw new RetroflectError(ErrorCode.BACKEND_FAILED, what);
  }
  return shapeOf(doc);
}

/**
 * What is wrong with the table, in words ("was deleted", "had its chains, rules, sets or counters changed", "had the
 * elements of set shield_tcp changed"), or null when it is whole: the shape of `expected`, the elements of `cfg`.
 */
export async function tableDamage(cfg: InterceptConfig, expected: TableShape): Promise<string | null> {
  const doc = await listTable();
  if (!doc) return 'was deleted';
  if (shapeOf(doc) !== expected) return 'had its chains, rules, sets or counters changed';
  const have = elementsOf(doc);
  const want = shieldSetMembers(cfg);
  for (const [set, members] of Object.entries(want)) {
    const expectedKeys = members.map(elementKey).sort();
    const same = JSON.stringify(have.get(set) ?? []) === JSON.stringify(expectedKeys);
    if (!same) return `had the elements of set ${set} changed`;
  }
  return null;
}
