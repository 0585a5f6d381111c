/**
 * Options every command shares, and the one way a command ends: its result lines (or, with
 * `--json`, one JSON object) on stdout and an exit code. Options declare no `env`: their variables
 * are read by src/environment.ts, where `VAR=""` and an unset `VAR` are told apart. None is
 * `required` (a required option fed only by its variable fails at parse time): `perform()` validates.
 */
import { Command, Option } from 'clipanion';
import { resolveLocations, resolveMigrationDir, type Locations } from '../config.js';
import { setting } from '../environment.js';
import { exitMeaning, isToolError, reportError } from '../errors.js';
import { createOutput, type Output } from '../log.js';
import { lockFolders, type LockedFolder, type RunLocks } from '../migration/run-lock.js';

/** What `--json` prints: the result a command recorded with `record()`, and how it ended. */
export interface JsonResult {
  command: string;
  status: 'ok' | 'error';
  exit_code: number;
  /** The exit code's name and meaning (docs/exit-codes.md). */
  meaning: string;
  error?: { code: string; message: string; fix?: string };
  [field: string]: unknown;
}

/** Prints the `--json` result: one line on stdout, the only thing there. */
export function writeJsonResult(command: string, code: number, fields: Record<string, unknown>, error?: JsonResult['error']): void {
  const result: JsonResult = {
    command,
    status: code === 0 ? 'ok' : 'error',
    exit_code: code,
    meaning: exitMeaning(code),
    ...fields,
    ...(error ? { error } : {}),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

export abstract class BaseCommand extends Command {
  /**
   * The folders this command writes: each is locked for the whole run (src/migration/run-lock.ts)
   * and a second run on it is refused at once (exit 19). A command that writes names them here.
   */
  static locks: readonly LockedFolder[] = [];

  storagePath = Option.String('--storage-path', { description: 'The bot\'s storage folder (STORAGE_PATH); the crypto store defaults to its encrypted/ folder' });
  cryptoStorePath = Option.String('--crypto-store-path', { description: 'The crypto store folder holding matrix-sdk-crypto/ and bot-sdk.json (CRYPTO_STORE_PATH)' });
  migrationDir = Option.String('--migration-dir', { description: 'Where key files, state and backups go (MIGRATION_DIR, default: current folder)' });
  storePassphrase = Option.String('--store-passphrase', { description: 'The Sled store passphrase (STORE_PASSPHRASE, default: empty, as matrix-bot-sdk 0.6.6+ uses)' });
  // Accepted and ignored: runbooks written for 0.1 set it for a working copy of the store, which
  // the reader no longer makes (it reads the store in place, read-only).
  workDir = Option.String('--work-dir', { hidden: true });
  verbose = Option.Boolean('--verbose', false, { description: 'More detail in the log' });
  json = Option.Boolean('--json', false, { description: 'Print the result as one JSON object on stdout (logs and progress stay on stderr)' });

  private _out?: Output;
  private readonly recorded: Record<string, unknown> = {};

  /** The command's work; errors become one line and an exit code here, for every command. */
  protected abstract perform(): Promise<number>;

  async execute(): Promise<number> {
    let code: number;
    let error: JsonResult['error'];
    let locks: RunLocks | undefined;
    try {
      this.checkOptions();
      locks = await this.lockFolders();
      code = await this.perform();
    } catch (e) {
      code = reportError(e);
      error = isToolError(e)
        ? { code: e.code, message: e.message, ...(e.hint ? { fix: e.hint } : {}) }
        : { code: 'INTERNAL', message: e instanceof Error ? e.message : String(e) };
    } finally {
      locks?.release();
    }
    if (this.json) writeJsonResult(this.path.join(' '), code, this.recorded, error);
    return code;
  }

  /** Options checked before any folder is locked (or created): a usage error changes nothing. */
  protected checkOptions(): void {}

  private async lockFolders(): Promise<RunLocks | undefined> {
    const wanted = (this.constructor as typeof BaseCommand).locks;
    if (!wanted.length) return undefined;
    // MIGRATION_DIR alone needs no store path (delete-device with OLD_DEVICE_ID runs without one).
    const dirs = wanted.map((what) => ({ what, dir: what === 'migration-dir' ? resolveMigrationDir(setting(this.migrationDir, 'MIGRATION_DIR')) : this.locations().cryptoStorePath }));
    return lockFolders(dirs, this.path.join(' '), this.out);
  }

  /**
   * Adds fields to the command's JSON result: counts, versions, paths, IDs, public keys. Never a
   * secret: this object is printed as it is.
   */
  protected record(fields: Record<string, unknown>): void {
    Object.assign(this.recorded, fields);
  }

  protected get out(): Output {
    // With --json, stdout carries the JSON object alone: result lines go to stderr.
    this._out ??= createOutput({ verbose: this.verbose, resultsToStderr: this.json });
    return this._out;
  }

  protected locations(): Locations {
    return resolveLocations({
      storagePath: setting(this.storagePath, 'STORAGE_PATH'),
      cryptoStorePath: setting(this.cryptoStorePath, 'CRYPTO_STORE_PATH'),
      migrationDir: setting(this.migrationDir, 'MIGRATION_DIR'),
      storePassphrase: setting(this.storePassphrase, 'STORE_PASSPHRASE'),
    });
  }
}
