/**
 * The decisions of the release's deploy scripts (powershell/deploy/Deployment.ps1) that need no engine, in the Linux
 * pwsh, one pwsh run for all: the form in which the 64-bit relaunch forwards Install.ps1's parameters (a set switch
 * by its name alone, which Windows PowerShell 5.1's -File binds, a cleared one left out, a list as 'a,b'), checked by
 * binding it to Install.ps1's own param block in a real `pwsh -File`; when the relaunch happens; version order for
 * the downgrade refusal; the deploy log's day file, size cap and pruning.
 * The relaunch itself, the exit codes and the rollback run under Wine (test/release/deploy-windows.test.ts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pwshTestGate, type Pwsh } from '../helpers/pwsh.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const DEPLOY = join(ROOT, 'powershell', 'deploy');
const pwshOrReason = pwshTestGate('the deploy scripts');

interface Facts {
  forwarded: string[];
  notRelaunched: boolean;
  relaunchHost: string;
  relaunchArgs: string[];
  order: number[];
  logFiles: string[];
  logOld: number;
  logNow: number;
  cap: number;
}

const PROBE = String.raw`
param([string]$Deploy, [string]$Work)
$ErrorActionPreference = 'Stop'
. (Join-Path $Deploy 'Deployment.ps1')
$bound = [ordered]@{ Address = @('203.0.113.7', '203.0.113.8'); AllowFirewall = [switch]$true
    AllowDowngrade = [switch]$true; Verbose = [switch]$true; RemoveConfig = [switch]$false; Root = '/' }
$forwarded = @(ConvertTo-RetroflectDeployArgument -Bound $bound)
Remove-Item Env:RETROFLECT_TEST_DEPLOY_AS_32BIT -ErrorAction SilentlyContinue
$notRelaunched = $null -eq (Get-RetroflectDeploy64Relaunch -ScriptPath '/x/Install.ps1' -Bound $bound)
$env:RETROFLECT_TEST_DEPLOY_AS_32BIT = '1'
$env:WINDIR = '/windir'
$relaunch = Get-RetroflectDeploy64Relaunch -ScriptPath '/x/Install.ps1' -Bound $bound
$pairs = @(@('1.2.3', '1.2.3'), @('1.2.4', '1.2.3'), @('1.10.0', '1.9.9'), @('1.2.3-rc1', '1.2.3'),
    @('1.2.3', '1.2.3-rc1'), @('0.9.0', '1.0.0'))
$order = @(foreach ($p in $pairs) { Compare-RetroflectDeployVersion -A $p[0] -B $p[1] })
# The log: a small cap, a stale day file, then lines past the cap.
$script:DeployLogMaxBytes = 300
$layout = Get-RetroflectDeployLayout -Version '1.2.3' -Root $Work
$null = New-Item -ItemType Directory -Path $layout.LogDir -Force
$stale = Join-Path $layout.LogDir 'retroflect-install-20000101.log'
Set-Content -LiteralPath $stale -Value 'old'
(Get-Item -LiteralPath $stale).LastWriteTime = (Get-Date).AddDays(-40)
$log = Open-RetroflectDeployLog -Layout $layout -Action 'install'
foreach ($i in 1..12) { Write-RetroflectDeployLog -Log $log -Message ('line {0} {1}' -f $i, ('x' * 40)) }
[pscustomobject]@{
    forwarded = $forwarded; notRelaunched = $notRelaunched; relaunchHost = $relaunch.Host
    relaunchArgs = @($relaunch.Arguments); order = $order
    logFiles = @(Get-ChildItem -LiteralPath $layout.LogDir -Name | Sort-Object)
    logOld = (Get-Item -LiteralPath ($log.Path + '.old')).Length; logNow = (Get-Item -LiteralPath $log.Path).Length
    cap = $script:DeployLogMaxBytes
} | ConvertTo-Json -Depth 3
`;

const skip = typeof pwshOrReason === 'string' ? pwshOrReason : false;

test('deploy scripts: relaunch forwarding, version order, the capped day log (Linux pwsh)', { skip }, () => {
  const pwsh = pwshOrReason as Pwsh;
  const work = mkdtempSync(join(tmpdir(), 'rft-deploy-'));
  try {
    const probe = join(work, 'probe.ps1');
    writeFileSync(probe, PROBE);
    const args = ['-NoProfile', '-NonInteractive', '-File', probe, '-Deploy', DEPLOY, '-Work', join(work, 'root')];
    const r = spawnSync(pwsh.path, args, { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const facts = JSON.parse(r.stdout) as Facts;

    // A set switch by name only, a cleared one not at all, a list as one 'a,b' argument; never '-Name:$true' or 'True'.
    const forwarded = [
      '-Address', '203.0.113.7,203.0.113.8', '-AllowDowngrade', '-AllowFirewall', '-Root', '/', '-Verbose',
    ];
    assert.deepEqual(facts.forwarded, forwarded);
    assert.ok(facts.forwarded.every((a) => !/:|^(True|False)$/.test(a)));
    assert.ok(facts.notRelaunched, 'a 64-bit host does not relaunch');
    // Join-Path on Linux turns the separators.
    assert.equal(facts.relaunchHost, '/windir/sysnative/WindowsPowerShell/v1.0/powershell.exe');
    const host = ['-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', '/x/Install.ps1'];
    assert.deepEqual(facts.relaunchArgs, [...host, ...forwarded]);
    assert.deepEqual(facts.order, [0, 1, 1, -1, 1, -1]);
    const today = new Date();
    const two = (n: number): string => String(n).padStart(2, '0');
    const day = `${today.getFullYear()}${two(today.getMonth() + 1)}${two(today.getDate())}`;
    const dayFiles = [`retroflect-install-${day}.log`, `retroflect-install-${day}.log.old`];
    assert.deepEqual(facts.logFiles, dayFiles, 'the stale day file is gone; one .old kept');
    const aside = facts.logOld;
    assert.ok(aside <= facts.cap && aside > facts.cap - 120, `the full file moved aside at the cap (${aside})`);
    assert.ok(facts.logNow > 0 && facts.logNow <= facts.cap, `the new file is within the cap (${facts.logNow})`);

    // The forwarded arguments bind to Install.ps1's own parameters in a real -File run.
    const install = readFileSync(join(DEPLOY, 'Install.ps1'), 'utf8');
    const params = install.slice(install.indexOf('[CmdletBinding()]'), install.indexOf("$Version = '@VERSION@'"));
    const bindProbe = join(work, 'bind.ps1');
    const report = '$o = [ordered]@{}\n' +
      'foreach ($k in $PSBoundParameters.Keys) { $o[$k] = "$($PSBoundParameters[$k])" }\n' +
      '$o | ConvertTo-Json -Compress\n';
    writeFileSync(bindProbe, `${params}\n${report}`);
    const bindArgs = ['-NoProfile', '-NonInteractive', '-File', bindProbe, ...forwarded];
    const b = spawnSync(pwsh.path, bindArgs, { encoding: 'utf8', timeout: 120_000 });
    assert.equal(b.status, 0, `${b.stdout}\n${b.stderr}`);
    const bound = {
      Address: '203.0.113.7,203.0.113.8', AllowDowngrade: 'True', AllowFirewall: 'True', Root: '/', Verbose: 'True',
    };
    assert.deepEqual(JSON.parse(b.stdout), bound);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
