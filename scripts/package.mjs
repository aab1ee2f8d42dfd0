#!/usr/bin/env node
// Makes the release archives admins deploy (offline: only files already on this machine and npm packages):
//   dist/retroflect-<version>-linux-x64.tar.gz
//   dist/retroflect-<version>-win-x64.zip
//   dist/SHA256SUMS                              checksums of the archives
// Each archive holds, at its root: the executable; the PowerShell module in Retroflect/<version>/; Install.ps1,
// Uninstall.ps1 and Detect.ps1 (powershell/deploy/); on Windows the Intune Remediations pair in remediations/
// (powershell/remediations/) and the ADMX/ADML template in policy/ (policy/); FIRST-STEPS.txt; LICENSE; THIRD-PARTY-NOTICES.txt (Node.js,
// koffi and every npm package bundled into the executable, from their package metadata); SHA256SUMS of its files.
//
// Usage: npm run package [-- --windivert <dir>] [--no-build] [--only linux|windows]
//   --windivert <dir>   add WinDivert.dll, WinDivert64.sys (2.2) and WinDivert's licence from <dir> to the Windows
//                       archive. WinDivert is not ours to ship by default.
//   --no-build          use the executables already in dist/ (npm run build -- --windows made them)
//   --version-label <v> build as version <v> instead of package.json's (tests use it to make an upgrade)
//   --out-dir <dir>     build and package into <dir> instead of dist/
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, copyFileSync, createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import * as tar from 'tar';
import yazl from 'yazl';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const option = (name) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  if (!args[i + 1] || args[i + 1].startsWith('--')) fail(`${name} needs a value`);
  return args[i + 1];
};
const dist = resolve(option('--out-dir') ?? join(root, 'dist'));
// Where the executables and the bundle's package list come from: what this run builds, or dist/ with --no-build.
const built = args.includes('--no-build') ? join(root, 'dist') : dist;
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const version = option('--version-label') ?? pkg.version;
const only = option('--only');
const windivertDir = option('--windivert');
const targets = [
  { id: 'linux-x64', exe: 'retroflect', archive: `retroflect-${version}-linux-x64.tar.gz` },
  { id: 'win-x64', exe: 'retroflect.exe', archive: `retroflect-${version}-win-x64.zip` },
].filter((t) => !only || t.id.startsWith(only === 'windows' ? 'win' : only));

function fail(message) {
  console.error(`package: ${message}`);
  process.exit(1);
}

/** WinDivert 2.2's files, checked before anything is built. */
const WINDIVERT_FILES = ['WinDivert.dll', 'WinDivert64.sys'];
function windivertLicence(dir) {
  const found = ['LICENSE', 'LICENSE.txt', 'license.txt', 'LICENSE.md'].find((name) => existsSync(join(dir, name)));
  return found ? join(dir, found) : null;
}
if (windivertDir) {
  for (const f of WINDIVERT_FILES) {
    if (!existsSync(join(windivertDir, f))) fail(`--windivert ${windivertDir}: ${f} is missing (WinDivert 2.2, x64)`);
  }
  if (!windivertLicence(windivertDir)) {
    fail(`--windivert ${windivertDir}: WinDivert's licence file (LICENSE) is missing; it must ship with the driver`);
  }
}

if (!args.includes('--no-build')) {
  const buildArgs = [join(root, 'scripts', 'build.mjs')];
  if (targets.some((t) => t.id === 'win-x64')) buildArgs.push('--windows');
  if (version !== pkg.version) buildArgs.push('--version-label', version);
  buildArgs.push('--out-dir', dist);
  execFileSync(process.execPath, buildArgs, { stdio: 'inherit', cwd: root });
}

// ---- licences ----------------------------------------------------------------------------------------------------

function packageLicenceText(dir) {
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)([-.][a-z0-9.-]*)?$/i.test(f));
  return file ? readFileSync(join(dir, file), 'utf8').trim() : null;
}

function nodeLicence() {
  // The Node.js binary both executables are built on; its licence ships with every Node.js install.
  const nodeDir = dirname(process.execPath);
  const candidates = [join(nodeDir, '..', 'share', 'doc', 'nodejs', 'LICENSE'), join(nodeDir, 'LICENSE')];
  const found = candidates.find((p) => existsSync(p));
  if (!found) fail(`Node.js's LICENSE was not found (looked at ${candidates.join(', ')})`);
  return readFileSync(found, 'utf8').trim();
}

/** Every npm package esbuild put into the bundle (recorded by build.mjs), plus koffi's native module. */
function thirdPartyNotices() {
  const listFile = join(built, 'bundled-packages.json');
  if (!existsSync(listFile)) fail(`${listFile} is missing: run npm run build first`);
  // Package folders relative to the repository; koffi's JavaScript is replaced in the bundle by our loader, but its
  // native module travels inside the executable, so its notice is owed too.
  const dirs = new Set(JSON.parse(readFileSync(listFile, 'utf8')));
  dirs.add('node_modules/koffi');
  const nodeHeading = `Node.js ${process.version} (the runtime inside the executable)\n` +
    'License: MIT and others, as follows';
  const sections = [`${nodeHeading}\n\n${nodeLicence()}`];
  const seen = new Set();
  for (const rel of [...dirs].sort()) {
    const dir = join(root, rel);
    const name = rel.replace(/^.*node_modules\//, '');
    const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    const text = packageLicenceText(dir);
    if (!text) fail(`npm package ${name} has no licence file; its notice cannot be written`);
    if (seen.has(`${meta.name}@${meta.version}`)) continue;
    seen.add(`${meta.name}@${meta.version}`);
    const repo = typeof meta.repository === 'string' ? meta.repository : meta.repository?.url;
    const heading = `${meta.name} ${meta.version}${repo ? ` (${repo})` : ''}\nLicense: ${meta.license ?? 'see below'}`;
    sections.push(`${heading}\n\n${text}`);
  }
  const separator = `\n\n${'-'.repeat(60)}\n\n`;
  return `Third-party software in retroflect ${version}\n${'='.repeat(60)}\n\n${sections.join(separator)}\n`;
}

// ---- staging -----------------------------------------------------------------------------------------------------

function copyTree(from, to, skip = () => false) {
  mkdirSync(to, { recursive: true });
  for (const name of readdirSync(from)) {
    const src = join(from, name);
    if (skip(src)) continue;
    if (statSync(src).isDirectory()) copyTree(src, join(to, name), skip);
    else copyFileSync(src, join(to, name));
  }
}

function listFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listFiles(p));
    else out.push(p);
  }
  return out;
}

const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
const posix = (p) => p.split(sep).join('/');

/** Text files placed into the archive with the version filled in (@VERSION@) and the platform's line ends. */
function template(file, windows) {
  const text = readFileSync(file, 'utf8').replaceAll('@VERSION@', version);
  return windows ? text.replace(/\r?\n/g, '\r\n') : text;
}

function stage(target, notices) {
  const windows = target.id.startsWith('win');
  const dir = join(dist, 'stage', target.id);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const exe = join(built, target.exe);
  const buildCommand = `npm run build${windows ? ' -- --windows' : ''}`;
  if (!existsSync(exe)) fail(`${exe} is missing: run ${buildCommand} first (or drop --no-build)`);
  copyFileSync(exe, join(dir, target.exe));
  chmodSync(join(dir, target.exe), 0o755);

  // The module, in a version folder so Import-Module finds it by name once it sits in a PSModulePath folder.
  // PowerShell looks a module up by name only in a folder named like its ModuleVersion (no pre-release label).
  const moduleVersion = version.replace(/[-+].*$/, '');
  const moduleDir = join(dir, 'Retroflect', moduleVersion);
  copyTree(join(root, 'powershell', 'Retroflect'), moduleDir);
  const manifest = join(moduleDir, 'Retroflect.psd1');
  const text = readFileSync(manifest, 'utf8');
  if (!/ModuleVersion\s*=\s*'[^']*'/.test(text)) fail('Retroflect.psd1 has no ModuleVersion line');
  writeFileSync(manifest, text.replace(/ModuleVersion\s*=\s*'[^']*'/, `ModuleVersion        = '${moduleVersion}'`));

  const deploy = join(root, 'powershell', 'deploy');
  for (const name of ['Install.ps1', 'Uninstall.ps1', 'Detect.ps1', 'Deployment.ps1']) {
    writeFileSync(join(dir, name), template(join(deploy, name), windows));
  }
  const firstSteps = windows ? 'FIRST-STEPS.windows.txt' : 'FIRST-STEPS.linux.txt';
  writeFileSync(join(dir, 'FIRST-STEPS.txt'), template(join(deploy, firstSteps), windows));
  if (windows) {
    // Intune Remediations (single scripts, uploaded as they are) and the Group Policy / Intune ADMX template.
    mkdirSync(join(dir, 'remediations'), { recursive: true });
    for (const name of ['Detect-RetroflectDrift.ps1', 'Remediate-RetroflectDrift.ps1']) {
      writeFileSync(join(dir, 'remediations', name), template(join(root, 'powershell', 'remediations', name), windows));
    }
    mkdirSync(join(dir, 'policy', 'en-US'), { recursive: true });
    for (const name of ['Retroflect.admx', join('en-US', 'Retroflect.adml')]) {
      writeFileSync(join(dir, 'policy', name), template(join(root, 'policy', name), windows));
    }
  }
  writeFileSync(join(dir, 'LICENSE'), readFileSync(join(root, 'LICENSE')));
  writeFileSync(join(dir, 'THIRD-PARTY-NOTICES.txt'), notices);
  if (windows && windivertDir) {
    for (const f of WINDIVERT_FILES) copyFileSync(join(windivertDir, f), join(dir, f));
    copyFileSync(windivertLicence(windivertDir), join(dir, 'WinDivert-LICENSE.txt'));
  }
  const sums = listFiles(dir).map((f) => `${sha256(f)}  ${posix(relative(dir, f))}`);
  writeFileSync(join(dir, 'SHA256SUMS'), sums.join('\n') + '\n');
  return dir;
}

async function archive(target, dir) {
  const out = join(dist, target.archive);
  rmSync(out, { force: true });
  const files = listFiles(dir).map((f) => posix(relative(dir, f)));
  if (target.archive.endsWith('.tar.gz')) {
    await tar.create({ gzip: { level: 9 }, file: out, cwd: dir, portable: true, noMtime: false }, files);
  } else {
    const zip = new yazl.ZipFile();
    for (const f of files) zip.addFile(join(dir, f), f, { mode: statSync(join(dir, f)).mode, compress: true });
    zip.end();
    await new Promise((res, rej) => zip.outputStream.pipe(createWriteStream(out)).on('close', res).on('error', rej));
  }
  return out;
}

const notices = thirdPartyNotices();
const made = [];
for (const target of targets) {
  const dir = stage(target, notices);
  const out = await archive(target, dir);
  made.push(out);
  console.log(`packaged ${relative(root, out)} (${(statSync(out).size / 1048576).toFixed(1)} MB)`);
}
// Checksums of every archive in dist/ (also those of an earlier run for the other platform).
const archives = readdirSync(dist).filter((f) => /^retroflect-.+-(linux-x64\.tar\.gz|win-x64\.zip)$/.test(f)).sort();
writeFileSync(join(dist, 'SHA256SUMS'), archives.map((f) => `${sha256(join(dist, f))}  ${f}`).join('\n') + '\n');
rmSync(join(dist, 'stage'), { recursive: true, force: true });
