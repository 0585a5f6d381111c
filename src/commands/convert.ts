import path from 'node:path';
import { Command, Option } from 'clipanion';
import { MIGRATION_FILES } from '../config.js';
import { envFlag, setting } from '../environment.js';
import { ensurePrivateDir } from '../migration/atomic-file.js';
import { convertStore, type ConvertReport } from '../pipeline/convert.js';
import { BaseCommand } from './base.js';

/** How each Sled tree is named to an operator. */
const KINDS: Record<string, string> = {
  account: 'Olm account and backup settings',
  private_identity: 'private cross-signing identity',
  inbound_group_sessions: 'room keys',
  session: 'Olm sessions',
  devices: 'known devices',
  identities: 'user identities',
  tracked_users: 'tracked users',
  olm_hashes: 'Olm message hashes',
};

export const OLD_BOT_WARNING =
  'never start the old bot against the Sled store again: two live copies of one Olm account break its sessions with every peer. Keep the Sled store only as the rollback, for as long as the new bot has not run (docs/convert.md)';

export class ConvertCommand extends BaseCommand {
  static override paths = [['convert']];
  static override usage = Command.Usage({
    description: 'Write the Sled store straight into the SQLite store the upgraded bot opens, keeping its device and every key',
    details:
      'Reads the Olm account (same device, same identity keys), Olm sessions, room keys with their flags, the cross-signing identity, backup version and key, devices, identities and tracked users, and writes CRYPTO_STORE_PATH/matrix-sdk-crypto.sqlite3 with matrix-sdk-crypto / matrix-sdk-sqlite 0.9.0 (what matrix-bot-sdk 0.8 opens). The store is built under a temporary name, reopened and checked, then renamed into place. Strict by default: a damaged entry stops the run and nothing is written. The Sled store is never written; stop the bot first.',
    examples: [
      ['See what would be converted', 'sled-migration-tool convert --dry-run'],
      ['Convert', 'sled-migration-tool convert'],
    ],
  });

  dryRun = Option.Boolean('--dry-run', false, { description: 'Read and check everything, write nothing' });
  skipErrors = Option.Boolean('--skip-errors', false, { description: 'Carry on past damaged entries and list them' });
  failedOutput = Option.String('--failed-output', { description: 'Where damaged entries are listed (default: MIGRATION_DIR/failed-sessions.json)' });
  force = Option.Boolean('--force', false, { description: 'Rename an existing matrix-sdk-crypto.sqlite3 aside (never deleted) instead of refusing' });
  sqlitePassphrase = Option.String('--sqlite-passphrase', { description: 'Passphrase of the new SQLite store (SQLITE_PASSPHRASE, default: the store passphrase, "" as matrix-bot-sdk passes)' });

  protected async perform(): Promise<number> {
    const loc = this.locations();
    const failedOutputPath = path.resolve(this.failedOutput ?? path.join(loc.migrationDir, MIGRATION_FILES.failedSessions));
    if (this.skipErrors) await ensurePrivateDir(loc.migrationDir);
    const report = await convertStore({
      source: { cryptoStorePath: loc.cryptoStorePath, passphrase: loc.storePassphrase },
      sqlitePassphrase: setting(this.sqlitePassphrase, 'SQLITE_PASSPHRASE'),
      dryRun: this.dryRun,
      skipErrors: this.skipErrors,
      force: this.force || envFlag('FORCE_CONVERT'),
      failedOutputPath,
      out: this.out,
    });
    this.describe(report, failedOutputPath);
    return 0;
  }

  private describe(r: ConvertReport, failedOutputPath: string) {
    const out = this.out;
    out.result(`${r.dry_run ? 'would convert' : 'converted'} the Sled store of ${r.user_id}, device ${r.device_id} (identity keys kept: curve25519 ${r.curve25519}, ed25519 ${r.ed25519})`);
    for (const t of r.trees) {
      if (t.reason !== null) continue;
      const name = KINDS[t.tree] ?? t.tree;
      out.result(`  ${name}: ${t.converted}${t.damaged ? `, ${t.damaged} damaged (left behind)` : ''}`);
    }
    const keys = r.trees.find((t) => t.tree === 'inbound_group_sessions');
    if (keys && r.distinct_room_keys !== keys.converted) out.result(`  (${r.distinct_room_keys} distinct room keys: the Sled store held some twice)`);
    out.result(`  backup: ${r.backup_version ? `version ${r.backup_version}${r.has_backup_key ? ', with its key' : ''}` : 'none'}; cross-signing identity: ${r.has_cross_signing_identity ? 'yes' : 'none'}`);
    const behind = r.trees.filter((t) => t.reason !== null && t.left_behind > 0);
    for (const t of behind) out.verbose(`  not carried over: ${t.tree} (${t.left_behind}): ${t.reason}`);
    if (behind.length) out.result(`  not carried over: ${behind.map((t) => `${t.tree} ${t.left_behind}`).join(', ')} (nothing the bot cannot rebuild; --verbose says why)`);
    if (r.damaged.length) out.result(`  ${r.damaged.length} damaged entries left behind, listed in ${failedOutputPath}`);
    if (r.bot_sdk_device_id && r.bot_sdk_device_id !== r.device_id) {
      out.warn(`bot-sdk.json names device ${r.bot_sdk_device_id}, the Olm account is device ${r.device_id}: the upgraded bot must log in with an access token of device ${r.device_id}`);
    }
    if (r.dry_run) {
      if (r.existing_sqlite_store === 'with-account' || r.existing_sqlite_store === 'unreadable') {
        out.result(`a real run would refuse: matrix-sdk-crypto.sqlite3 already exists (${r.existing_sqlite_store}); --force renames it aside`);
      }
      out.result('dry run: nothing was written');
      return;
    }
    if (r.moved_aside) out.info(`the SQLite store that was there is kept as ${r.moved_aside}`);
    out.result(`wrote ${r.written}: start the upgraded bot (matrix-bot-sdk 0.8) with the same access token; it opens this store as device ${r.device_id}`);
    out.warn(OLD_BOT_WARNING);
  }
}
