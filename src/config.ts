/**
 * Where things are: the environment variables of the operators' runbooks, with flags that mirror
 * them. Flags win over the environment; defaults are the runbook's.
 */
import path from 'node:path';
import { ToolError } from './errors.js';

export interface Locations {
  cryptoStorePath: string;
  migrationDir: string;
  storePassphrase: string;
}

export interface LocationInput {
  storagePath?: string;
  cryptoStorePath?: string;
  migrationDir?: string;
  storePassphrase?: string;
}

export function resolveLocations(input: LocationInput): Locations {
  const storagePath = input.storagePath || undefined;
  const explicit = input.cryptoStorePath || undefined;
  if (!explicit && !storagePath) {
    throw new ToolError(
      'STORE_NOT_FOUND',
      'no store given: neither CRYPTO_STORE_PATH nor STORAGE_PATH is set',
      'set STORAGE_PATH to the bot\'s storage folder (its encrypted/ folder is the crypto store) or CRYPTO_STORE_PATH to the crypto store itself',
    );
  }
  const cryptoStorePath = path.resolve(explicit ?? path.join(storagePath!, 'encrypted'));
  return {
    cryptoStorePath,
    migrationDir: resolveMigrationDir(input.migrationDir),
    storePassphrase: input.storePassphrase ?? '',
  };
}

/** MIGRATION_DIR, default the current folder: it does not depend on where the store is. */
export function resolveMigrationDir(migrationDir: string | undefined): string {
  return path.resolve(migrationDir || process.cwd());
}

/** The files of MIGRATION_DIR, named once. */
export const MIGRATION_FILES = {
  recoveryKey: 'recovery-key.txt',
  privateKey: 'backup-private-key.bin',
  publicKey: 'backup-public-key.txt',
  state: 'migration-state.json',
  extractedKeys: 'extracted-keys.json',
  megolmExport: 'element-keys.txt',
  failedSessions: 'failed-sessions.json',
} as const;

