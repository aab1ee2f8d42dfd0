/**
 * The systemd unit Install-Retroflect writes on Linux (run by the real pwsh into a scratch root): restart on
 * failure with back-off and no start limit, a clean stop on SIGTERM, the journal as its output. `systemd-analyze
 * verify` on this host's systemd (252 on Debian 12) accepts it; that version ignores RestartSteps and
 * RestartMaxDelaySec (254+) with a note, which docs/windows.md and the unit's comments say.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pwshTestGate } from '../helpers/pwsh.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const pwsh = pwshTestGate('the systemd unit Install-Retroflect writes');
const work = mkdtempSync(join(tmpdir(), 'rft-unit-'));
after(() => rmSync(work, { recursive: true, force: true }));

const skip = typeof pwsh === 'string' ? pwsh : false;

const TITLE = 'the unit restarts on failure with back-off, never gives up, stops with SIGTERM, logs to the journal';

test(TITLE, { skip, timeout: 120_000 }, () => {
  const exe = join(work, 'retroflect');
  copyFileSync('/bin/true', exe); // Install-Retroflect under another root checks only that the file is there
  chmodSync(exe, 0o755);
  const root = join(work, 'root');
  const manifest = join(ROOT, 'powershell', 'Retroflect', 'Retroflect.psd1');
  const install = `Install-Retroflect -Root '${root}' -Path '${exe}' -Address 192.0.2.1 -Confirm:$false | Out-Null`;
  const script = `Import-Module '${manifest}'; ${install}`;
  const argv = ['-NoProfile', '-NonInteractive', '-Command', script];
  const r = spawnSync((pwsh as { path: string }).path, argv, { encoding: 'utf8', timeout: 90_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const unitPath = join(root, 'etc', 'systemd', 'system', 'retroflect.service');
  const unit = readFileSync(unitPath, 'utf8');
  const section = (name: string): Map<string, string> => {
    const body = unit.split(/^\[/m).find((s) => s.startsWith(`${name}]`)) ?? '';
    const settings = body.split('\n').slice(1).filter((l) => /^\w+=/.test(l));
    return new Map(settings.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  };
  const unitSection = section('Unit');
  const service = section('Service');
  assert.equal(unitSection.get('StartLimitIntervalSec'), '0');
  assert.equal(service.get('ExecStart'), `${exe} run --config /etc/retroflect/config.json`);
  assert.equal(service.get('Restart'), 'on-failure');
  assert.equal(service.get('RestartSec'), '5');
  assert.equal(service.get('RestartSteps'), '5');
  assert.equal(service.get('RestartMaxDelaySec'), '120');
  assert.equal(service.get('KillSignal'), 'SIGTERM');
  assert.equal(service.get('TimeoutStopSec'), '30');
  assert.equal(service.get('SyslogIdentifier'), 'retroflect');
  assert.equal(section('Install').get('WantedBy'), 'multi-user.target');

  if (existsSync('/usr/bin/systemd-analyze')) {
    // ExecStart must name an existing absolute executable for verify: the copy above.
    const v = spawnSync('systemd-analyze', ['verify', unitPath], { encoding: 'utf8', timeout: 60_000 });
    const newerKeys = /Unknown key (name )?'(RestartSteps|RestartMaxDelaySec)'/;
    const lines = (v.stdout + v.stderr).split('\n');
    const problems = lines.filter((l) => l.includes('retroflect.service') && !newerKeys.test(l));
    assert.deepEqual(problems, [], v.stdout + v.stderr);
  }
});
