/**
 * The one place the CLI reads its environment. clipanion's own `env` takes a variable only when it
 * is non-empty, so `SQLITE_PASSPHRASE=""` counted as unset and another passphrase was used: no
 * option declares `env` (test/environment.test.ts checks), every setting is read here instead.
 *
 * Each variable says what its empty value means. For a passphrase, a password or a confirmation,
 * `""` is a value like any other (matrix-bot-sdk's passphrase *is* `""`). For a path, a URL, a token
 * or a device ID, `""` can only be a runbook's placeholder, so it counts as not given (and the
 * default applies, or the command says the setting is missing).
 */

export type EmptyMeans = 'a value' | 'not given';

/** Every variable a command reads, with what `""` means for it. docs/migration-guide.md lists them. */
export const SETTINGS = {
  STORAGE_PATH: 'not given',
  CRYPTO_STORE_PATH: 'not given',
  MIGRATION_DIR: 'not given',
  STORE_PASSPHRASE: 'a value',
  SQLITE_PASSPHRASE: 'a value',
  EXPORT_PASSPHRASE: 'a value',
  HOMESERVER_URL: 'not given',
  ACCESS_TOKEN: 'not given',
  CA_FILE: 'not given',
  OLD_DEVICE_ID: 'not given',
  MIGRATION_PASSWORD: 'a value',
  MIGRATION_CONFIRM: 'a value',
  WORK_DIR: 'not given',
} as const satisfies Record<string, EmptyMeans>;

export type SettingName = keyof typeof SETTINGS;

/** The variable's value, `undefined` when unset (or empty where `""` means "not given"). */
export function fromEnvironment(name: SettingName, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!Object.prototype.hasOwnProperty.call(env, name)) return undefined;
  const value = env[name];
  if (value === undefined) return undefined;
  if (value === '' && SETTINGS[name] === 'not given') return undefined;
  return value;
}

/** A flag wins over its variable; a flag given as `--x=` is the empty string, a value. */
export function setting(flag: string | undefined, name: SettingName): string | undefined {
  return flag !== undefined ? flag : fromEnvironment(name);
}

/** A yes/no environment variable such as FORCE_NEW_BACKUP=1. */
export function envFlag(name: string): boolean {
  return /^(1|true|yes|on)$/i.test(process.env[name]?.trim() ?? '');
}

/** A positive number from the environment (the retry budget), else the default. */
export function envNumber(name: string, fallback: number): number {
  return Number(process.env[name]) || fallback;
}

/** Tuning and diagnostics variables that are not settings of the migration itself. */
export const diagnostics = {
  debug: () => Boolean(process.env.DEBUG),
  ci: () => process.env.CI === 'true',
};
