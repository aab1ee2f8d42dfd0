/**
 * The PowerShell module Retroflect.
 *
 * 1. Run powershell/Tests/*.Tests.ps1 with Pester 5 in pwsh 7 (both from NuGet: scripts/install-pwsh.sh), against the
 *    real engine (dist/retroflect) inside a network namespace. Without pwsh it skips on a developer's machine and
 *    fails on CI.
 * 2. STATIC CHECKS that need no PowerShell: they read the module's files as text and check facts about them
 *    (manifest vs. files, help, ShouldProcess, error ids vs. docs, format views vs. object types, protocol codes
 *    vs. src/errors.ts, PowerShell 5.1 syntax). They cannot prove the code runs; they catch drift and omissions.
 * 3. SYNTAX CHECK with the tree-sitter PowerShell grammar (a third-party grammar, not PowerShell's own parser), when
 *    the packages web-tree-sitter and tree-sitter-powershell are installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { ErrorCode } from '../../src/errors.ts';
import { createTopology, run } from '../helpers/netns.ts';
import { pwshTestGate } from '../helpers/pwsh.ts';

const root = join(new URL('.', import.meta.url).pathname, '..', '..');
const ps = join(root, 'powershell');
const mod = join(ps, 'Retroflect');
const read = (p: string): string => readFileSync(p, 'utf8');
const publicFiles = readdirSync(join(mod, 'Public')).filter((f) => f.endsWith('.ps1')).sort();
const privateFiles = readdirSync(join(mod, 'Private')).filter((f) => f.endsWith('.ps1')).sort();
const allScripts = [
  ...publicFiles.map((f) => join(mod, 'Public', f)),
  ...privateFiles.map((f) => join(mod, 'Private', f)),
  join(mod, 'Retroflect.psm1'),
  ...readdirSync(join(ps, 'Tests')).filter((f) => f.endsWith('.ps1')).map((f) => join(ps, 'Tests', f)),
];
/** What admins run on Windows PowerShell 5.1 too (5.1 syntax and ASCII checks): the deploy scripts, the Windows tests. */
const windowsScripts = [...psFilesUnder(join(ps, 'deploy')), ...psFilesUnder(join(ps, 'Tests', 'Windows'))];

/** Every .ps1/.psm1/.psd1 below `dir` (none when it does not exist). */
function psFilesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => /\.ps[md]?1$/.test(f))
    .sort()
    .map((f) => join(dir, f));
}

/** Verbs used here, all from PowerShell's approved list (Get-Verb). */
const APPROVED_VERBS = new Set(['Add', 'Get', 'Remove', 'Start', 'Stop', 'Test', 'Install', 'Uninstall', 'Set', 'New', 'Connect', 'Disconnect', 'Invoke', 'Resolve', 'ConvertTo', 'ConvertFrom', 'Join', 'Update', 'Watch', 'Save', 'Receive', 'Select']);
/** Verbs that change something and so must support -WhatIf/-Confirm. */
const CHANGING_VERBS = new Set(['Add', 'Remove', 'Start', 'Stop', 'Install', 'Uninstall', 'Set', 'Save']);

/** Comment-based help block and param block of a public function file. */
function parseFunction(text: string): { name: string; help: string; params: string[]; binding: string } {
  const name = /^function\s+([A-Za-z]+-[A-Za-z]+)\s*\{/m.exec(text)?.[1] ?? '';
  const help = /<#([\s\S]*?)#>/.exec(text)?.[1] ?? '';
  const binding = /\[CmdletBinding\(([^)]*)\)\]/.exec(text)?.[1] ?? '';
  const paramBlock = /\n\s*param\(([\s\S]*?)\n\s*\)\s*\n/.exec(text)?.[1] ?? '';
  const params = [...paramBlock.matchAll(/\]\s*\$([A-Za-z]+)/g)].map((m) => m[1]);
  return { name, help, params: [...new Set(params)], binding };
}

test('pwsh: Pester tests of every cmdlet against a real engine', async (t) => {
  const pwsh = pwshTestGate('the Pester suite of the PowerShell module');
  if (typeof pwsh === 'string') {
    t.skip(pwsh);
    return;
  }
  const exe = join(root, 'dist', 'retroflect');
  assert.ok(existsSync(exe), `${exe} is missing: run 'npm run build' first`);
  // The engine changes routes and devices: run pwsh (and so the engines it starts) inside our own namespaces.
  const topo = await createTopology('pws');
  const dir = mkdtempSync(join(tmpdir(), 'rft-pws-'));
  try {
    const r = await run('env', [`RETROFLECT_TEST_ENGINE_EXE=${exe}`, `RETROFLECT_TEST_DIR=${dir}`, `RETROFLECT_TEST_PWSH=${pwsh.path}`,
      'ip', 'netns', 'exec', topo.a.name,
      pwsh.path, '-NoProfile', '-NonInteractive', '-File', join(ps, 'Tests', 'Invoke-RetroflectTests.ps1')], { timeoutMs: 15 * 60_000 });
    assert.equal(r.code, 0, `Pester failed:\n${r.stdout}\n${r.stderr}`);
    const plain = r.stdout.replace(/\x1b\[[0-9;]*m/g, '');
    if (process.env.RETROFLECT_PESTER_OUTPUT) console.log(plain);
    for (const line of plain.split('\n').filter((l) => /Tests (completed|Passed)/.test(l))) t.diagnostic(line.trim());
  } finally {
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('static: manifest FunctionsToExport equals the functions in Public/, one per file named like the file', () => {
  const manifest = read(join(mod, 'Retroflect.psd1'));
  const block = /FunctionsToExport\s*=\s*@\(([\s\S]*?)\)/.exec(manifest)?.[1] ?? '';
  const exported = [...block.matchAll(/'([^']+)'/g)].map((m) => m[1]).sort();
  const defined = publicFiles.map((f) => {
    const text = read(join(mod, 'Public', f));
    const fns = [...text.matchAll(/^function\s+([A-Za-z-]+)/gm)].map((m) => m[1]);
    assert.deepEqual(fns, [f.replace(/\.ps1$/, '')], `${f} must define exactly the function ${f.replace(/\.ps1$/, '')}`);
    return fns[0];
  });
  assert.deepEqual(exported, defined.sort());
  assert.match(manifest, /ModuleVersion\s*=\s*'0\.1\.0'/);
  assert.match(manifest, /CompatiblePSEditions\s*=\s*@\('Desktop',\s*'Core'\)/);
  assert.match(manifest, /PowerShellVersion\s*=\s*'5\.1'/);
  assert.match(manifest, /FormatsToProcess\s*=\s*@\('Retroflect\.Format\.ps1xml'\)/);
  assert.ok(existsSync(join(mod, 'Retroflect.Format.ps1xml')));
  // The brief's cmdlets, all present.
  for (const name of ['Start-Retroflect', 'Stop-Retroflect', 'Get-Retroflect', 'Add-ReflectAddress', 'Remove-ReflectAddress', 'Get-ReflectAddress',
    'Test-ReflectAddress', 'Add-ShieldPort', 'Remove-ShieldPort', 'Get-ShieldPort', 'Get-ReflectStats', 'Get-ReflectFlow', 'Install-Retroflect', 'Uninstall-Retroflect']) {
    assert.ok(exported.includes(name), `${name} is exported`);
  }
});

test('static: every public function has CmdletBinding without accidental positions, approved verb, full help with .LINK, its own Pester file', () => {
  for (const f of publicFiles) {
    const { name, help, params, binding } = parseFunction(read(join(mod, 'Public', f)));
    const verb = name.split('-')[0];
    assert.ok(APPROVED_VERBS.has(verb), `${name}: verb ${verb} is approved`);
    assert.ok(/\[CmdletBinding\(/.test(read(join(mod, 'Public', f))), `${name} has [CmdletBinding()]`);
    for (const section of ['.SYNOPSIS', '.DESCRIPTION', '.EXAMPLE', '.OUTPUTS']) {
      assert.ok(help.includes(section), `${name} help has ${section}`);
    }
    assert.ok(params.length > 0 || name === '', `${name} has parameters`);
    for (const p of params) {
      assert.match(help, new RegExp(`\\.PARAMETER ${p}\\b`), `${name} documents -${p}`);
    }
    assert.ok(help.includes('.LINK'), `${name} help has .LINK`);
    assert.match(binding, /PositionalBinding = \$false/, `${name}: only parameters marked Position bind by position`);
    assert.ok(existsSync(join(ps, 'Tests', `${name}.Tests.ps1`)), `${name} has its own Pester file powershell/Tests/${name}.Tests.ps1`);
    if (CHANGING_VERBS.has(verb)) {
      assert.match(binding, /SupportsShouldProcess/, `${name} changes something, so it declares SupportsShouldProcess`);
      assert.match(binding, /ConfirmImpact\s*=\s*'(Low|Medium|High)'/, `${name} sets ConfirmImpact`);
    } else {
      assert.doesNotMatch(binding, /SupportsShouldProcess/, `${name} changes nothing and should not offer -WhatIf`);
    }
  }
});

test('static: pipeline forms from the brief bind by value or by property name', () => {
  const fn = (n: string): string => read(join(mod, 'Public', `${n}.ps1`));
  // '192.0.2.1','192.0.2.2' | Add-ReflectAddress and Get-ReflectAddress | Remove-ReflectAddress
  for (const n of ['Add-ReflectAddress', 'Remove-ReflectAddress', 'Test-ReflectAddress']) {
    assert.match(fn(n), /ValueFromPipeline, ValueFromPipelineByPropertyName\)\]\s*\[Alias\([^)]*\)\]\s*\[object\[\]\]\$Address/, n);
  }
  // Get-ShieldPort | Remove-ShieldPort: Port and Protocol by property name; '8080/tcp' as Start-Retroflect takes it.
  for (const n of ['Add-ShieldPort', 'Remove-ShieldPort']) {
    assert.match(fn(n), /ValueFromPipeline, ValueFromPipelineByPropertyName\)\]\s*\[object\[\]\]\$Port/, n);
    assert.match(fn(n), /Add-RetroflectPortItem \$collector \$Port \$Protocol/, `${n} parses ports with the one parser`);
    assert.match(fn(n), /Position = 1, ValueFromPipelineByPropertyName\)\]\s*\[ValidateSet\('tcp', 'udp', 'both'\)\]\s*\[string\]\$Protocol/, n);
  }
  // Get-ReflectFlow | Sort-Object Bytes: Bytes is a [long] on Retroflect.Flow.
  assert.match(read(join(mod, 'Private', 'Objects.ps1')), /PSTypeName\s*=\s*'Retroflect\.Flow'[\s\S]*?Bytes\s*=\s*\[long\]\$Flow\.bytes/);
});

test('static: -Pipe binds the same way on every cmdlet, and each kind of -Protocol has one set (issue 21)', () => {
  const shieldSets = new Set<string>();
  const trafficSets = new Set<string>();
  for (const f of publicFiles) {
    const text = read(join(mod, 'Public', f));
    const pipe = /((?:\[[^\]\n]*\]\s*)*)\[string\]\$Pipe\b/.exec(text);
    if (pipe) {
      assert.match(pipe[1], /ValueFromPipelineByPropertyName/, `${f}: -Pipe binds by property name (piped objects carry their engine's pipe)`);
      assert.match(pipe[1], /\[Alias\('PipeName'\)\]/, `${f}: -Pipe has the alias PipeName`);
    }
    const protocol = /\[ValidateSet\(([^)]*)\)\]\s*\[string(?:\[\])?\]\$Protocol\b/.exec(text);
    if (!protocol) continue;
    (/ShieldPort/.test(f) ? shieldSets : trafficSets).add(protocol[1]);
  }
  assert.deepEqual([...shieldSets], ["'tcp', 'udp', 'both'"], 'the shield port cmdlets share one -Protocol set');
  assert.deepEqual([...trafficSets], ["'tcp', 'udp', 'icmp', 'other'"], 'the traffic cmdlets share one -Protocol set (icmp covers ICMPv6)');
});

test('static: every protocol error code is mapped, and every error id the module can raise is documented', () => {
  const errors = read(join(mod, 'Private', 'Errors.ps1'));
  const map = new Map([...errors.matchAll(/'([A-Z_]+)'\s*=\s*@\{\s*Id\s*=\s*'([A-Za-z]+)';\s*Category\s*=\s*'([A-Za-z]+)'/g)].map((m) => [m[1], { id: m[2], category: m[3] }]));
  for (const code of Object.values(ErrorCode)) assert.ok(map.has(code), `src/errors.ts code ${code} is mapped in Errors.ps1`);
  const categories = new Set(['NotSpecified', 'OpenError', 'CloseError', 'DeviceError', 'DeadlockDetected', 'InvalidArgument', 'InvalidData', 'InvalidOperation',
    'InvalidResult', 'InvalidType', 'MetadataError', 'NotImplemented', 'NotInstalled', 'ObjectNotFound', 'OperationStopped', 'OperationTimeout', 'SyntaxError',
    'ParserError', 'PermissionDenied', 'ResourceBusy', 'ResourceExists', 'ResourceUnavailable', 'ReadError', 'WriteError', 'FromStdErr', 'SecurityError',
    'ProtocolError', 'ConnectionError', 'AuthenticationError', 'LimitsExceeded', 'QuotaExceeded', 'NotEnabled']);
  const about = read(join(mod, 'en-US', 'about_Retroflect.help.txt'));
  for (const [code, { id, category }] of map) {
    assert.ok(categories.has(category), `${code}: ${category} is an ErrorCategory member`);
    assert.match(about, new RegExp(`Retroflect\\.${id}\\s+${category}\\b`), `about_Retroflect documents Retroflect.${id} (${category})`);
  }
  // Every code raised anywhere in the module is in the map (an unknown one would silently become Internal).
  for (const file of allScripts.filter((p) => p.includes(`${join('powershell', 'Retroflect')}`))) {
    for (const m of read(file).matchAll(/-Code '([A-Z_]+)'/g)) assert.ok(map.has(m[1]), `${file}: code ${m[1]} is mapped`);
  }
});

test('static: Format.ps1xml is well-formed and has a table and a list view for exactly the types the module creates', () => {
  const xml = read(join(mod, 'Retroflect.Format.ps1xml'));
  assertWellFormedXml(xml);
  const created = new Set<string>();
  for (const file of allScripts.filter((p) => p.includes(join('powershell', 'Retroflect')))) {
    for (const m of read(file).matchAll(/PSTypeName\s*=\s*'(Retroflect\.[A-Za-z]+)'/g)) created.add(m[1]);
  }
  created.delete('Retroflect.Connection'); // internal, never output
  for (const name of ['Retroflect.Status', 'Retroflect.ReflectAddress', 'Retroflect.ShieldPort', 'Retroflect.Stats', 'Retroflect.Flow']) assert.ok(created.has(name), name);
  const views = [...xml.matchAll(/<View>[\s\S]*?<TypeName>([^<]+)<\/TypeName>[\s\S]*?<(TableControl|ListControl)>/g)].map((m) => `${m[1]} ${m[2]}`);
  const named = new Set(views.map((v) => v.split(' ')[0]));
  assert.deepEqual([...named].sort(), [...created].sort(), 'views name exactly the created types');
  for (const type of created) {
    assert.ok(views.includes(`${type} TableControl`), `${type} has a table view`);
    assert.ok(views.includes(`${type} ListControl`), `${type} has a list view`);
  }
  // Every property a view shows exists on that type's builder.
  const objects = read(join(mod, 'Private', 'Objects.ps1')) + publicFiles.map((f) => read(join(mod, 'Public', f))).join('\n');
  for (const m of xml.matchAll(/<PropertyName>([A-Za-z]+)<\/PropertyName>/g)) {
    assert.match(objects, new RegExp(`\\b${m[1]}\\s*=`), `property ${m[1]} shown by a view is set by a builder`);
  }
});

test('static: scripts use only Windows PowerShell 5.1 syntax', () => {
  for (const file of [...allScripts, ...windowsScripts]) {
    const code = stripStringsAndComments(read(file));
    assert.doesNotMatch(code, /\?\?/, `${file}: ?? is PowerShell 7 only`);
    assert.doesNotMatch(code, /\?\./, `${file}: ?. is PowerShell 7 only`);
    assert.doesNotMatch(code, /\s\?\s[^:\n]+\s:\s/, `${file}: the ternary operator is PowerShell 7 only`);
    assert.doesNotMatch(code, /\)\s*(&&|\|\|)\s*/, `${file}: pipeline chain operators are PowerShell 7 only`);
    assert.doesNotMatch(code, /-Parallel\b|\bclean\s*\{/, `${file}: PowerShell 7 only feature`);
    const bom = readFileSync(file).subarray(0, 3);
    assert.ok(!(bom[0] === 0xef && bom[1] === 0xbb) , `${file}: ASCII/UTF-8 without BOM`);
    assert.ok(/^[\x09\x0a\x0d\x20-\x7e]*$/.test(read(file)), `${file}: ASCII only (Windows PowerShell 5.1 reads BOM-less files as ANSI)`);
  }
});

test('syntax: every .ps1 parses with the tree-sitter PowerShell grammar', async (t) => {
  const grammar = await loadTreeSitterPowerShell();
  if (typeof grammar === 'string') {
    t.skip(grammar);
    return;
  }
  for (const file of allScripts) {
    const text = read(file);
    const lines = text.split('\n');
    const tree = grammar.parse(text);
    const errors: string[] = [];
    const walk = (n: TsNode): void => {
      // The grammar knows no attribute on a class; DSC needs [DscResource()] on each resource class (Retroflect.psm1).
      if (n.type === 'ERROR' && lines[n.startPosition.row]?.trim() === '[DscResource()]') return;
      if (n.type === 'ERROR' || n.isMissing) errors.push(`${n.type} at line ${n.startPosition.row + 1}: ${n.text.slice(0, 60)}`);
      for (const c of n.children) walk(c);
    };
    walk(tree.rootNode);
    assert.deepEqual(errors, [], `${file} has syntax errors`);
  }
});

interface TsNode {
  type: string;
  isMissing: boolean;
  text: string;
  startPosition: { row: number };
  children: TsNode[];
}

async function loadTreeSitterPowerShell(): Promise<{ parse(text: string): { rootNode: TsNode } } | string> {
  // From the project's node_modules, or from RETROFLECT_TREE_SITTER_DIR (a folder with both installed).
  const bases = [join(root, 'package.json'), ...(process.env.RETROFLECT_TREE_SITTER_DIR ? [join(process.env.RETROFLECT_TREE_SITTER_DIR, 'package.json')] : [])];
  for (const base of bases) {
    const req = createRequire(base);
    try {
      const wts = req.resolve('web-tree-sitter');
      const wasm = join(req.resolve('tree-sitter-powershell/package.json'), '..', 'tree-sitter-powershell.wasm');
      const { Parser, Language } = (await import(wts)) as { Parser: any; Language: any };
      await Parser.init();
      const parser = new Parser();
      parser.setLanguage(await Language.load(wasm));
      return parser;
    } catch {
      // not installed there; try the next place
    }
  }
  return 'web-tree-sitter and tree-sitter-powershell are not installed (they are requested as devDependencies); without them there is no PowerShell parser here';
}

/** Blank out string literals, here-strings and comments so syntax checks see only code. */
function stripStringsAndComments(src: string): string {
  return src
    .replace(/<#[\s\S]*?#>/g, '')
    .replace(/@'[\s\S]*?'@|@"[\s\S]*?"@/g, "''")
    .replace(/'(?:[^']|'')*'/g, "''")
    .replace(/"(?:[^"`]|`.)*"/g, '""')
    .replace(/#.*$/gm, '');
}

/** A small well-formedness check: balanced, properly nested tags; quoted attributes; one root element. */
function assertWellFormedXml(xml: string): void {
  const body = xml.replace(/<\?xml[^?]*\?>/, '').replace(/<!--[\s\S]*?-->/g, '');
  const stack: string[] = [];
  let roots = 0;
  for (const m of body.matchAll(/<(\/?)([A-Za-z][\w.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|<|>/g)) {
    if (m[0] === '<' || m[0] === '>') {
      // A bare < or > outside a tag: only > is allowed in text (e.g. "-gt" is written out in our scripts).
      assert.notEqual(m[0], '<', `stray '<' at offset ${m.index}`);
      continue;
    }
    const [, close, name, , selfClose] = m;
    if (close) {
      assert.equal(stack.pop(), name, `closing </${name}> matches the open tag`);
    } else if (!selfClose) {
      if (stack.length === 0) roots++;
      stack.push(name);
    }
  }
  assert.deepEqual(stack, [], 'every tag is closed');
  assert.equal(roots, 1, 'one root element');
}
