/**
 * SO_PEERCRED through koffi reports the real uid of the connecting process. The peer is a child process running as
 * uid 65534 (nobody) connecting to a socket in a directory it may reach (a test-only layout: the engine's own socket
 * directory is 0700, which is exactly why a non-root peer cannot be produced against the real server).
 */
import { after, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAllowedPeer, peerCredentials, type PeerCredentials } from '../../src/control/peer-credentials.ts';

const dir = mkdtempSync(join(tmpdir(), 'rft-peer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function credentialsOf(uid: number | undefined): Promise<{ cred: PeerCredentials | null; pid: number }> {
  const path = join(dir, `s${uid ?? 'self'}.sock`);
  const got = new Promise<PeerCredentials | null>((resolve) => {
    const server = net.createServer((s) => {
      resolve(peerCredentials(s));
      s.destroy();
      server.close();
    });
    server.listen(path, () => chmodSync(path, 0o777));
  });
  await new Promise((r) => setTimeout(r, 50));
  const child = spawn(process.execPath, ['-e', `const s=require('net').connect(${JSON.stringify(path)});s.on('error',()=>{});setTimeout(()=>process.exit(0),2000)`], {
    ...(uid === undefined ? {} : { uid, gid: uid }),
    stdio: 'ignore',
  });
  const cred = await got;
  child.kill();
  return { cred, pid: child.pid! };
}

it('reads the uid, gid and pid of a non-root peer, which is then not allowed', { skip: process.geteuid?.() !== 0 && 'needs root to run a peer as nobody' }, async () => {
  chmodSync(dir, 0o755);
  const { cred, pid } = await credentialsOf(65534);
  assert.deepEqual(cred, { pid, uid: 65534, gid: 65534 });
  assert.equal(isAllowedPeer(cred, 0), false);
});

it('reads a root peer, which is allowed; unreadable credentials are refused', async () => {
  const { cred, pid } = await credentialsOf(undefined);
  assert.equal(cred?.pid, pid);
  assert.equal(cred?.uid, process.geteuid!());
  assert.equal(isAllowedPeer(cred), true);
  assert.equal(isAllowedPeer(null), false);
});
