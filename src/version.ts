/** The product version, from package.json (bundled into the executable at build time). */
import pkg from '../package.json' with { type: 'json' };

/** Set only by `scripts/build.mjs --version-label <v>` (test builds of another version, e.g. for upgrade tests). */
declare const __RETROFLECT_VERSION__: string | undefined;

export const VERSION: string = typeof __RETROFLECT_VERSION__ === 'string' ? __RETROFLECT_VERSION__ : pkg.version;
