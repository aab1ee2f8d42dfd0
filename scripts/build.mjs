#!/usr/bin/env node
// Builds retroflect:
//   dist/retroflect.cjs   one bundled script (esbuild); run it with node
//   dist/retroflect       Linux single-file executable (Node SEA: node binary + bundled script + koffi.node asset
//                         + the ebpf backend's tc program, native/reflect_tc.bpf.c compiled by `make -C native bpf`)
//   dist/reflect_tc.bpf.o that program beside dist/retroflect.cjs, for runs of the script with node
//   dist/retroflect.exe   Windows single-file executable, with --windows (needs the Windows node.exe and koffi
//                         binary fetched from the npm registry by test/wine/setup.ts or --windows-node <path>)
// pkg cannot fetch its base binaries here, so packaging uses Node's own single-executable applications + postject.
// The Linux base node is stripped of its debug symbols first (about 12 MB); the Windows base gets retroflect's own
// version resource (file/product version from package.json, description) before the script is injected.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import * as ResEdit from 'resedit';
import { bundleCli } from './bundle.mjs';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
// --out-dir <dir>: build somewhere else than dist/ (tests build a second version without touching dist/).
const outAt = args.indexOf('--out-dir');
const dist = outAt >= 0 ? resolve(args[outAt + 1]) : join(root, 'dist');
const wantWindows = args.includes('--windows');
const noSea = args.includes('--no-sea');
const require = createRequire(join(root, 'package.json'));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
// --version-label <v>: build as version <v> (scripts/package.mjs uses it so tests can make an upgrade build).
const labelAt = args.indexOf('--version-label');
const version = labelAt >= 0 ? args[labelAt + 1] : pkg.version;
if (!/^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$/.test(version ?? '')) {
  console.error(`--version-label needs a version like 1.2.3, got ${version}`);
  process.exit(2);
}

mkdirSync(dist, { recursive: true });
// The ebpf backend's program: compiled here (clang -target bpf), carried inside the executable. Without clang the
// build goes on without it, and the engine falls back to TUN (saying why).
const bpfObject = join(root, 'native', 'build', 'bpf', 'reflect_tc.bpf.o');
try {
  execFileSync('make', ['-s', '-C', join(root, 'native'), 'bpf'], { stdio: 'inherit' });
  copyFileSync(bpfObject, join(dist, 'reflect_tc.bpf.o'));
} catch {
  console.warn('warning: the eBPF program was not built (clang and libbpf-dev missing?); this build can only use the TUN backend on Linux');
}
const { main, worker } = await bundleCli({ root, version, outfile: join(dist, 'retroflect.cjs') });
// The npm packages inside the bundle (main and worker), for the release's third-party notices (scripts/package.mjs).
// Recorded as package folders relative to the repository (a package may be nested in another's node_modules).
const bundled = new Set();
for (const input of [...Object.keys(main.metafile.inputs), ...Object.keys(worker.metafile.inputs)]) {
  const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (m) bundled.add(m[1]);
}
writeFileSync(join(dist, 'bundled-packages.json'), JSON.stringify([...bundled].sort(), null, 2) + '\n');
chmodSync(join(dist, 'retroflect.cjs'), 0o755);
console.log('built dist/retroflect.cjs');

/** A copy of the Linux node binary without debug symbols (the SEA needs none; saves ~12 MB). */
function strippedNode(nodeBinary) {
  const out = join(dist, '.node-linux-base');
  execFileSync('strip', ['-o', out, nodeBinary], { stdio: 'inherit' });
  return out;
}

/**
 * A copy of the Windows node.exe whose version resource names retroflect: file and product version from
 * package.json, description, product and file names. Done before the script is injected, so the SEA blob is untouched.
 */
function versionedWindowsNode(nodeExe) {
  const exe = ResEdit.NtExecutable.from(readFileSync(nodeExe), { ignoreCert: true });
  const res = ResEdit.NtExecutableResource.from(exe);
  const [info] = ResEdit.Resource.VersionInfo.fromEntries(res.entries);
  const [major, minor, patch] = version.split(/[.+-]/).map((n) => Number.parseInt(n, 10) || 0);
  const langs = info.getAllLanguagesForStringValues();
  for (const lang of langs.length ? langs : [{ lang: 1033, codepage: 1200 }]) {
    info.setFileVersion(major, minor, patch, 0, lang.lang);
    info.setProductVersion(major, minor, patch, 0, lang.lang);
    info.setStringValues(lang, {
      FileDescription: 'retroflect - reflect traffic to chosen addresses back into this host',
      ProductName: 'retroflect',
      CompanyName: 'retroflect contributors',
      FileVersion: version,
      ProductVersion: version,
      InternalName: 'retroflect',
      OriginalFilename: 'retroflect.exe',
      LegalCopyright: `${pkg.license} licence; includes Node.js (MIT) and koffi (MIT)`,
    });
  }
  info.outputToResourceEntries(res.entries);
  res.outputResource(exe);
  const out = join(dist, '.node-win-base.exe');
  writeFileSync(out, Buffer.from(exe.generate()));
  return out;
}

function makeSea({ nodeBinary, koffiNative, out, blobName, extraAssets = {} }) {
  const seaConfig = join(dist, `${blobName}.sea-config.json`);
  const blob = join(dist, `${blobName}.blob`);
  writeFileSync(seaConfig, JSON.stringify({
    main: join(dist, 'retroflect.cjs'),
    output: blob,
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    useCodeCache: false,
    assets: { 'koffi.node': koffiNative, ...extraAssets },
  }, null, 2));
  execFileSync(process.execPath, ['--experimental-sea-config', seaConfig], { stdio: 'inherit' });
  rmSync(out, { force: true });
  copyFileSync(nodeBinary, out);
  const postject = join(dirname(require.resolve('postject/package.json')), 'dist', 'cli.js');
  const fuse = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
  execFileSync(process.execPath, [postject, out, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', fuse], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  chmodSync(out, 0o755);
  rmSync(seaConfig);
  rmSync(blob);
  console.log(`built ${out.slice(root.length + 1)}`);
}

if (!noSea && process.platform === 'linux') {
  const koffiPackage = dirname(require.resolve('@koromix/koffi-linux-x64/package.json'));
  const koffiNative = join(koffiPackage, 'linux_x64', 'koffi.node');
  const base = strippedNode(process.execPath);
  const extraAssets = existsSync(bpfObject) ? { 'reflect_tc.bpf.o': bpfObject } : {};
  makeSea({ nodeBinary: base, koffiNative, out: join(dist, 'retroflect'), blobName: 'linux', extraAssets });
  rmSync(base);
}

if (wantWindows) {
  const i = args.indexOf('--windows-node');
  const wine = join(root, '.tmp', 'wine');
  const nodeExe = i >= 0 ? args[i + 1] : join(wine, 'node', 'node.exe');
  const koffiWin = join(wine, 'node_modules', '@koromix', 'koffi-win32-x64', 'win32_x64', 'koffi.node');
  for (const f of [nodeExe, koffiWin]) {
    if (!existsSync(f)) {
      const setup = 'node --import tsx test/wine/setup.ts';
      console.error(`missing ${f}: run \`${setup}\` first (fetches them from the npm registry)`);
      process.exit(1);
    }
  }
  const base = versionedWindowsNode(nodeExe);
  makeSea({ nodeBinary: base, koffiNative: koffiWin, out: join(dist, 'retroflect.exe'), blobName: 'win' });
  rmSync(base);
}

