// Bundles with esbuild, the one place that says how: the CLI into one script (used by scripts/build.mjs for
// dist/retroflect.cjs, and by test/helpers/cli.ts for the bundle the tests start instead of the source through tsx),
// and the test files of a tier that runs bundled (scripts/test.mjs, test/tiers.mjs).
// The engine's worker is bundled first and carried inside the main bundle as a string (__RETROFLECT_WORKER_SOURCE__).
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** esbuild options shared by the main and the worker bundle of version `version` of the checkout at `root`. */
function bundleOptions(root, version, logLevel) {
  return {
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    alias: { koffi: join(root, 'src/platform/koffi-bundled.ts') },
    // worker-entry.ts only reads import.meta.url when the worker source was not injected, never in a bundle.
    define: { 'import.meta.url': '"file:///bundled"', __RETROFLECT_VERSION__: JSON.stringify(version) },
    logLevel,
    legalComments: 'none',
    absWorkingDir: root,
  };
}

/**
 * Writes the CLI bundle (src/cli/main.ts with the worker inside) of the checkout at `root` to `outfile`.
 * Returns both esbuild results, whose metafiles list what went in. `logLevel`: what esbuild prints (tests ask for
 * errors only, as they bundle in every test process).
 */
export async function bundleCli({ root, version, outfile, logLevel = 'warning' }) {
  const common = bundleOptions(root, version, logLevel);
  const worker = await build({ ...common, entryPoints: ['src/engine/worker.ts'], write: false, metafile: true });
  const main = await build({
    ...common,
    entryPoints: ['src/cli/main.ts'],
    outfile,
    metafile: true,
    define: { ...common.define, __RETROFLECT_WORKER_SOURCE__: JSON.stringify(worker.outputFiles[0].text) },
  });
  return { main, worker };
}

/** `import.meta` fields a bundle would otherwise answer for itself, kept as the source file's own. */
const SOURCE_LOCATION = /(?<!['"])\bimport\.meta\.(url|dirname|filename)\b(?!['"])/g;
function keepSourceLocation(root) {
  return {
    name: 'keep-source-location',
    setup(b) {
      b.onLoad({ filter: /\.(ts|mjs)$/ }, async (args) => {
        if (!args.path.startsWith(root) || args.path.includes('/node_modules/')) return undefined;
        const own = { url: pathToFileURL(args.path).href, dirname: dirname(args.path), filename: args.path };
        // Code only: a quoted name (an esbuild define key in scripts/bundle.mjs itself) stays as it is.
        const contents = (await readFile(args.path, 'utf8')).replace(SOURCE_LOCATION,
          (_, field) => JSON.stringify(own[field]));
        return { contents, loader: args.path.endsWith('.ts') ? 'ts' : 'js', resolveDir: dirname(args.path) };
      });
    },
  };
}

/**
 * Bundles test files (`files`: paths under `root`) for Node's test runner to run with plain node instead of through
 * tsx, which costs most of a small test file's CPU: each to `outdir` at the same relative path, as .mjs. Packages
 * stay in node_modules (the bundles sit inside the checkout, so they resolve as from source), `import.meta.url` and
 * its friends keep naming the source file (tests find their fixtures as from source), and the engine's worker is
 * injected bundled, as in the CLI bundle. Returns the bundles' paths, in the order of `files`.
 */
export async function bundleTests({ root, version, files, outdir, logLevel = 'error' }) {
  const common = bundleOptions(root, version, logLevel);
  const worker = await build({ ...common, alias: {}, packages: 'external', entryPoints: ['src/engine/worker.ts'],
    write: false });
  await build({
    entryPoints: files,
    outdir,
    outbase: root,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    packages: 'external',
    plugins: [keepSourceLocation(root)],
    define: { __RETROFLECT_WORKER_SOURCE__: JSON.stringify(worker.outputFiles[0].text) },
    logLevel,
    absWorkingDir: root,
  });
  return files.map((f) => join(outdir, f.replace(/\.ts$/, '.mjs')));
}
