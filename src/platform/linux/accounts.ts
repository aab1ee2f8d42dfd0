/**
 * User and group names on Linux, from /etc/passwd and /etc/group (the files every Linux has; names only NSS knows,
 * such as LDAP users, must be given as numbers). Used off the hot path: to turn `--users alice` into a uid when a
 * list is set, and a flow's uid into a name when flows are listed.
 */
import { readFileSync } from 'node:fs';

const PASSWD = '/etc/passwd';
const GROUP = '/etc/group';

/** name → id and id → name of one file (fields: name:x:id:...). Missing file: empty. */
function table(path: string): { byName: Map<string, number>; byId: Map<number, string> } {
  const byName = new Map<string, number>();
  const byId = new Map<number, string>();
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    // No such file (a minimal container): only numeric ids then.
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 3 || !/^\d+$/.test(f[2])) continue;
    const id = Number(f[2]);
    if (!byName.has(f[0])) byName.set(f[0], id);
    if (!byId.has(id)) byId.set(id, f[0]);
  }
  return { byName, byId };
}

/** The uid (kind 'users') or gid ('groups') of a name, or null when the file does not know it. */
export function lookupAccountId(kind: 'users' | 'groups', name: string): number | null {
  return table(kind === 'users' ? PASSWD : GROUP).byName.get(name) ?? null;
}

/** A resolver from uid to user name (null when unknown), reading /etc/passwd once per call of this function. */
export function userNames(): (uid: number) => string | null {
  const { byId } = table(PASSWD);
  return (uid) => byId.get(uid) ?? null;
}
