import path from 'node:path';
import { Command, Option } from 'clipanion';
import { MIGRATION_FILES } from '../config.js';
import { setting } from '../environment.js';
import { ensurePrivateDir } from '../migration/atomic-file.js';
import { mergeKeys, type MergeReport } from '../pipeline/merge.js';
import { BaseCommand } from './base.js';
import { OLD_BOT_WARNING } from './convert.js';
import { exportPassphraseFileOption, keyFileSource } from './export-passphrase.js';

export class MergeCommand extends BaseCommand {
  static override paths = [['merge']];
  static override locks = ['migration-dir', 'crypto-store'] as const;
  static override usage = Command.Usage({
    description: 'The bot already runs matrix-bot-sdk 0.8 and lost its history: add every old room key to its SQLite store, keeping its device',
    details:
      'Adds every room key of the Sled store (or of --from FILE: an extracted-keys.json, a JSON array of exported keys, or an Element key export) to CRYPTO_STORE_PATH/matrix-sdk-crypto.sqlite3 through matrix-sdk-crypto 0.9.0\'s own key import: a key the store already holds is replaced only by a better copy, merged keys are marked as imported, and the account, device, Olm sessions and everything else stay as they are. Works on a copy beside the store, reopened and checked before it replaces the store; the previous store is kept as matrix-sdk-crypto.sqlite3.before-merge-<time>. Stop the bot first. The Sled store is never written.',
    examples: [
      ['See what would be added', 'sled-migration-tool merge --dry-run'],
      ['Merge', 'sled-migration-tool merge'],
      ['Merge an Element key export', 'sled-migration-tool merge --from element-keys.txt'],
    ],
  });

  dryRun = Option.Boolean('--dry-run', false, { description: 'Count what would be added, improved or already present; write nothing' });
  skipErrors = Option.Boolean('--skip-errors', false, { description: 'Carry on past damaged entries and list them' });
  failedOutput = Option.String('--failed-output', { description: 'Where damaged entries are listed (default: MIGRATION_DIR/failed-sessions.json)' });
  force = Option.Boolean('--force', false, { description: 'Merge into a store that looks in use, or whose account is the Sled device with other identity keys' });
  from = Option.String('--from', { description: 'Merge the keys of this file instead of the Sled store: extracted-keys.json, a JSON array of keys, or an Element key export' });
  exportPassphraseFile = exportPassphraseFileOption();
  sqlitePassphrase = Option.String('--sqlite-passphrase', { description: 'Passphrase of the SQLite store (SQLITE_PASSPHRASE, default "", as matrix-bot-sdk 0.8 passes)' });

  protected async perform(): Promise<number> {
    const loc = this.locations();
    const failedOutputPath = path.resolve(this.failedOutput ?? path.join(loc.migrationDir, MIGRATION_FILES.failedSessions));
    if (this.skipErrors) await ensurePrivateDir(loc.migrationDir);
    const report = await mergeKeys({
      cryptoStorePath: loc.cryptoStorePath,
      source: this.from ? await keyFileSource(this.from, this.exportPassphraseFile) : { cryptoStorePath: loc.cryptoStorePath, passphrase: loc.storePassphrase },
      sqlitePassphrase: setting(this.sqlitePassphrase, 'SQLITE_PASSPHRASE') ?? '',
      dryRun: this.dryRun,
      skipErrors: this.skipErrors,
      force: this.force,
      failedOutputPath,
      out: this.out,
    });
    this.record({
      dry_run: report.dry_run,
      user_id: report.user_id,
      device_id: report.device_id,
      source: report.source,
      read: report.read,
      added: report.added,
      already_present: report.already_present,
      improved: report.improved,
      damaged: report.damaged.length,
      room_keys_before: report.room_keys_before,
      room_keys_after: report.room_keys_after,
      written: report.written,
      kept_as: report.kept_as,
    });
    this.describe(report, failedOutputPath);
    return 0;
  }

  private describe(r: MergeReport, failedOutputPath: string) {
    const out = this.out;
    const from = r.source === 'sled' ? 'the Sled store' : r.source;
    out.result(`${r.dry_run ? 'would merge' : 'merged'} ${r.read} room keys of ${from} into the store of ${r.user_id}, device ${r.device_id} (identity keys kept: ed25519 ${r.ed25519})`);
    out.result(`  added: ${r.added}; improved (held from a later message before): ${r.improved}; already present: ${r.already_present}; damaged, skipped: ${r.damaged.length}`);
    out.result(`  room keys in the store: ${r.room_keys_before} before, ${r.room_keys_after} after`);
    if (r.sled_account && r.sled_account.device_id === r.device_id && r.sled_account.ed25519 !== r.ed25519) {
      out.warn(`device ${r.device_id} has other identity keys than the Sled store's (ed25519 ${r.ed25519} here, ${r.sled_account.ed25519} there): merged into the new account as --force asked (docs/convert.md)`);
    }
    if (r.damaged.length) out.result(`  ${r.damaged.length} damaged entries left behind, listed in ${failedOutputPath}`);
    if (r.dry_run) {
      out.result('dry run: nothing was written');
      return;
    }
    out.info(`the store as it was is kept as ${r.kept_as} (to roll back: stop the bot, rename it back to matrix-sdk-crypto.sqlite3)`);
    out.result(`wrote ${r.written}: start the bot again; clients show the merged keys as imported`);
    if (r.source === 'sled') out.warn(OLD_BOT_WARNING);
  }
}
