// Bundles the CLI into one script with esbuild: the one place that says how (used by scripts/build.mjs for
// dist/retroflect.cjs, and by test/helpers/cli.ts for the bundle the tests start instead of the source through tsx).
// The engine's worker is bundled first and carried inside the main bundle as a string (__RETROFLECT_WORKER_SOURCE__).
import { build } from 'esbuild';
import { join } from 'node:path';

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
