/**
 * The import graph of src/ (every import, type-only and dynamic ones included) has no circles and no upward
 * imports. Layers, top to bottom; a module may import from its own layer and from any layer below it:
 *
 *   cli → doctor → control → engine → capture | packet-sources → packet | platform → config → errors
 *
 * `capture` (the worker's tap and what it records) and `packet-sources` (the backends) are the engine's two sides,
 * and `packet` (the pure packet core) and `platform` (shared OS helpers) are two more: each pair sits side by side
 * and may not import each other (what both need, such as the verdicts, lives in packet/). `errors` holds src/errors.ts, src/error-messages.ts and src/version.ts. The same order is drawn in docs/architecture.md.
 *
 * Inside packet-sources, each backend's folder (tun/, windivert/, memory/) is private: a file outside it imports the
 * backend only through the public face of packet-sources/ (BACKEND_GATES: registry.ts, which picks a backend and
 * re-exports what upper layers may know of one, such as WinDivert's priority limits; host-facts.ts, what the doctor
 * may ask a backend about the host). Everyone else uses
 * registry.ts and the contract, packet-source.ts. A folder of code several backends share is no backend
 * (SHARED_FOLDERS: linux/, what tun/ and ebpf/ have in common): only the backends it names import it, and it imports
 * none of them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';

const ROOT = resolve(import.meta.dirname, '..', '..');
const SRC = join(ROOT, 'src');

/** Layer of each top-level part of src/, and its rank (lower = higher up). Side-by-side layers share a rank. */
const LAYERS: Record<string, { layer: string; rank: number }> = {
  cli: { layer: 'cli', rank: 0 },
  doctor: { layer: 'doctor', rank: 0.5 },
  control: { layer: 'control', rank: 1 },
  engine: { layer: 'engine', rank: 2 },
  capture: { layer: 'capture', rank: 3 },
  'packet-sources': { layer: 'packet-sources', rank: 3 },
  packet: { layer: 'packet', rank: 4 },
  platform: { layer: 'platform', rank: 4 },
  config: { layer: 'config', rank: 5 },
  'errors.ts': { layer: 'errors', rank: 6 },
  'error-messages.ts': { layer: 'errors', rank: 6 },
  'version.ts': { layer: 'errors', rank: 6 },
};

function layerOf(file: string): { layer: string; rank: number } {
  const top = relative(SRC, file).split(/[\\/]/)[0];
  const l = LAYERS[top];
  assert.ok(l, `src/${top} is in no layer: add it to LAYERS here and to docs/architecture.md`);
  return l;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/**
 * Relative imports of TypeScript modules by a file (static, type-only, re-exports and dynamic import()), as absolute
 * paths. Data files (version.ts reads package.json) are not modules of a layer.
 */
function importsOf(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((s) => s.startsWith('.') && s.endsWith('.ts'))
    .map((s) => resolve(dirname(file), s));
}

const files = sourceFiles(SRC);
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const rel = (f: string): string => relative(ROOT, f);

test('the graph is read: every relative import of src/ resolves to a file in src/', () => {
  assert.ok(files.length > 40, `only ${files.length} files found`);
  let edges = 0;
  for (const [from, tos] of graph) {
    for (const to of tos) {
      assert.ok(graph.has(to), `${rel(from)} imports ${rel(to)}, which is not a .ts file of src/`);
      edges++;
    }
  }
  assert.ok(edges > 80, `only ${edges} imports found`);
});

test('no upward or sideways imports between layers', () => {
  const bad: string[] = [];
  for (const [from, tos] of graph) {
    const a = layerOf(from);
    for (const to of tos) {
      const b = layerOf(to);
      if (a.layer !== b.layer && b.rank <= a.rank) bad.push(`${rel(from)} (${a.layer}) imports ${rel(to)} (${b.layer})`);
    }
  }
  assert.deepEqual(bad, []);
});

const PACKET_SOURCES = join(SRC, 'packet-sources');
/** The only files outside a backend's folder that may import its files. */
const BACKEND_GATES = new Set([join(PACKET_SOURCES, 'registry.ts'), join(PACKET_SOURCES, 'host-facts.ts')]);

/** Folders of packet-sources/ that several backends share, and the backends that may import them. */
const SHARED_FOLDERS: Record<string, readonly string[]> = { linux: ['tun', 'ebpf'] };

/** The folder a file is in (src/packet-sources/<folder>/...), or null. */
function folderOf(file: string): string | null {
  const parts = relative(PACKET_SOURCES, file).split(/[\\/]/);
  return parts.length > 1 && parts[0] !== '..' ? parts[0] : null;
}

/** The backend folder a file is in (src/packet-sources/<backend>/...), or null (shared folders are no backend). */
function backendOf(file: string): string | null {
  const folder = folderOf(file);
  return folder !== null && !(folder in SHARED_FOLDERS) ? folder : null;
}

test('no sideways import into a backend\'s internals: outside its folder, only registry.ts imports a backend', () => {
  const backends = new Set(files.map(backendOf).filter((b) => b !== null));
  for (const b of ['tun', 'windivert', 'memory']) assert.ok(backends.has(b), `backend folder src/packet-sources/${b}/ not found`);
  const bad: string[] = [];
  for (const [from, tos] of graph) {
    for (const to of tos) {
      const backend = backendOf(to);
      if (backend === null || backendOf(from) === backend || BACKEND_GATES.has(from)) continue;
      bad.push(`${rel(from)} imports ${rel(to)}, inside the ${backend} backend: import it through src/packet-sources/registry.ts`);
    }
  }
  assert.deepEqual(bad, []);
});

test('a shared folder of packet-sources is imported only by the backends it is shared by, and imports none', () => {
  for (const shared of Object.keys(SHARED_FOLDERS)) {
    assert.ok(files.some((f) => folderOf(f) === shared), `shared folder src/packet-sources/${shared}/ not found`);
  }
  const bad: string[] = [];
  for (const [from, tos] of graph) {
    for (const to of tos) {
      const shared = folderOf(to);
      if (shared === null || !(shared in SHARED_FOLDERS) || folderOf(from) === shared) continue;
      const importer = backendOf(from);
      if (importer === null || !SHARED_FOLDERS[shared].includes(importer)) {
        bad.push(`${rel(from)} imports ${rel(to)}, shared only by ${SHARED_FOLDERS[shared].join(', ')}`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

test('no import circles, type-only imports included', () => {
  const circles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const to of graph.get(f) ?? []) {
      if (state.get(to) === 'open') circles.push([...stack.slice(stack.indexOf(to)), to].map(rel).join(' → '));
      else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  assert.deepEqual(circles, []);
});
