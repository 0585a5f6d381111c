/**
 * Options every command shares. Clipanion reads the environment through `env`; none is `required`
 * (a required option fed only by its variable fails at parse time): `execute()` validates.
 */
import { Command, Option } from 'clipanion';
import { resolveLocations, type Locations } from '../config.js';
import { reportError } from '../errors.js';
import { createOutput, type Output } from '../log.js';

export abstract class BaseCommand extends Command {
  storagePath = Option.String('--storage-path', { env: 'STORAGE_PATH', description: 'The bot\'s storage folder (STORAGE_PATH); the crypto store defaults to its encrypted/ folder' });
  cryptoStorePath = Option.String('--crypto-store-path', { env: 'CRYPTO_STORE_PATH', description: 'The crypto store folder holding matrix-sdk-crypto/ and bot-sdk.json (CRYPTO_STORE_PATH)' });
  migrationDir = Option.String('--migration-dir', { env: 'MIGRATION_DIR', description: 'Where key files, state and backups go (MIGRATION_DIR, default: current folder)' });
  storePassphrase = Option.String('--store-passphrase', { env: 'STORE_PASSPHRASE', description: 'The Sled store passphrase (STORE_PASSPHRASE, default: empty, as matrix-bot-sdk 0.6.6+ uses)' });
  // Accepted and ignored: runbooks written for 0.1 set it for a working copy of the store, which
  // the reader no longer makes (it reads the store in place, read-only).
  workDir = Option.String('--work-dir', { env: 'WORK_DIR', hidden: true });
  verbose = Option.Boolean('--verbose', false, { description: 'More detail in the log' });

  private _out?: Output;

  /** The command's work; errors become one line and an exit code here, for every command. */
  protected abstract perform(): Promise<number>;

  async execute(): Promise<number> {
    try {
      return await this.perform();
    } catch (e) {
      return reportError(e);
    }
  }

  protected get out(): Output {
    this._out ??= createOutput({ verbose: this.verbose });
    return this._out;
  }

  protected locations(): Locations {
    return resolveLocations({
      storagePath: this.storagePath,
      cryptoStorePath: this.cryptoStorePath,
      migrationDir: this.migrationDir,
      storePassphrase: this.storePassphrase,
    });
  }
}
