/**
 * Where the config file lives: `--config` wins, then env RETROFLECT_CONFIG, then the platform default
 * (Windows `%ProgramData%\Retroflect\config.json`, elsewhere `/etc/retroflect/config.json`).
 */

/** The platform default, used when neither `--config` nor RETROFLECT_CONFIG names a file. */
export function defaultConfigPath(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (platform === 'win32') {
    const programData = env.ProgramData ?? env.PROGRAMDATA ?? 'C:\\ProgramData';
    return `${programData}\\Retroflect\\config.json`;
  }
  return '/etc/retroflect/config.json';
}

/** The config path to use: `option` (from `--config`) unless empty, then RETROFLECT_CONFIG, then the default. */
export function resolveConfigPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (option !== undefined && option !== '') return option;
  if (env.RETROFLECT_CONFIG) return env.RETROFLECT_CONFIG;
  return defaultConfigPath(env);
}
