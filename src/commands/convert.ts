import path from 'node:path';
import { Command, Option } from 'clipanion';
import { MIGRATION_FILES } from '../config.js';
import { envFlag, setting } from '../environment.js';
import { ensurePrivateDir } from '../migration/atomic-file.js';
import { convertStore, type ConvertReport } from '../pipeline/convert.js';
import { ToolError } from '../errors.js';
import { whoami } from '../matrix/account.js';
import type { MatrixClient } from '../matrix/client.js';
import { claimOneTimeKeys, publishedDeviceKeys } from '../matrix/devices.js';
import { HomeserverCommand } from './homeserver.js';

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

export class ConvertCommand extends HomeserverCommand {
  static override paths = [['convert']];
  static override locks = ['migration-dir', 'crypto-store'] as const;
  static override homeserverRequired = false;
  static override usage = Command.Usage({
    description: 'Write the Sled store straight into the SQLite store the upgraded bot opens, keeping its device and every key',
    details:
      'Reads the Olm account (same device, same identity keys), Olm sessions, room keys with their flags, the cross-signing identity, backup version and key, devices, identities and tracked users, and writes CRYPTO_STORE_PATH/matrix-sdk-crypto.sqlite3 with matrix-sdk-crypto / matrix-sdk-sqlite 0.9.0 (what matrix-bot-sdk 0.8 opens). The store is built under a temporary name, reopened and checked, then renamed into place. Strict by default: a damaged entry stops the run and nothing is written. The Sled store is never written; stop the bot first.',
    examples: [
      ['See what would be converted', 'sled-migration-tool convert --dry-run'],
      ['Convert', 'sled-migration-tool convert'],
      ['Convert, refusing a token of another device', 'HOMESERVER_URL=https://matrix.example.org ACCESS_TOKEN=… sled-migration-tool convert'],
    ],
  });

  dryRun = Option.Boolean('--dry-run', false, { description: 'Read and check everything, write nothing' });
  skipErrors = Option.Boolean('--skip-errors', false, { description: 'Carry on past damaged entries and list them' });
  failedOutput = Option.String('--failed-output', { description: 'Where damaged entries are listed (default: MIGRATION_DIR/failed-sessions.json)' });
  force = Option.Boolean('--force', false, { description: 'Rename an existing matrix-sdk-crypto.sqlite3 aside (never deleted) instead of refusing' });
  sqlitePassphrase = Option.String('--sqlite-passphrase', { description: 'Passphrase of the new SQLite store (SQLITE_PASSPHRASE, default: "", what upstream matrix-bot-sdk 0.8 passes; only for bots that pass their own)' });
  checkToken = Option.Boolean('--check-token', false, { description: 'Ask the homeserver (HOMESERVER_URL, ACCESS_TOKEN) whose token the bot will use, and refuse a token of another user or device (done whenever both are set)' });

  protected async perform(): Promise<number> {
    const loc = this.locations();
    const client = this.optionalClient();
    if (this.checkToken && !client) {
      throw new ToolError('USAGE', '--check-token needs HOMESERVER_URL and ACCESS_TOKEN', 'set both to the homeserver and the access token the upgraded bot will use');
    }
    const tokenOwner = client ? await whoami(client).then((w) => ({ userId: w.user_id, deviceId: w.device_id })) : undefined;
    const sqlitePassphrase = setting(this.sqlitePassphrase, 'SQLITE_PASSPHRASE') ?? '';
    const failedOutputPath = path.resolve(this.failedOutput ?? path.join(loc.migrationDir, MIGRATION_FILES.failedSessions));
    if (this.skipErrors) await ensurePrivateDir(loc.migrationDir);
    const report = await convertStore({
      source: { cryptoStorePath: loc.cryptoStorePath, passphrase: loc.storePassphrase },
      sqlitePassphrase,
      tokenOwner,
      dryRun: this.dryRun,
      skipErrors: this.skipErrors,
      force: this.force || envFlag('FORCE_CONVERT'),
      failedOutputPath,
      out: this.out,
    });
    this.describe(report, failedOutputPath, sqlitePassphrase, tokenOwner);
    const staleOneTimeKeys = await this.claimStaleOneTimeKeys(report, client);
    this.record({
      dry_run: report.dry_run,
      user_id: report.user_id,
      device_id: report.device_id,
      identity_keys: { curve25519: report.curve25519, ed25519: report.ed25519 },
      trees: report.trees,
      distinct_room_keys: report.distinct_room_keys,
      damaged: report.damaged.length,
      backup_version: report.backup_version,
      written: report.written,
      moved_aside: report.moved_aside,
      same_device_repair: report.same_device_repair
        ? { added: report.same_device_repair.added, improved: report.same_device_repair.improved, already_present: report.same_device_repair.already_present, republishes_device_keys: report.same_device_repair.republishes_device_keys }
        : null,
      sqlite_passphrase_is_empty: sqlitePassphrase === '',
      token_checked: tokenOwner !== undefined,
      ...(staleOneTimeKeys !== undefined ? { stale_one_time_keys_claimed: staleOneTimeKeys } : {}),
      ...(report.damaged.length ? { failed_output: failedOutputPath } : {}),
    });
    return 0;
  }

  /**
   * Where the server publishes other identity keys for the device than the store's (an account
   * replaced under the same device ID), the one-time keys it holds for the device are that other
   * account's: a peer claiming one refuses its signature and withholds its room keys. They are
   * claimed here, before the bot starts and uploads its own (test/state1.test.ts measures both).
   */
  private async claimStaleOneTimeKeys(r: ConvertReport, client: MatrixClient | undefined): Promise<number | undefined> {
    if (r.dry_run) return undefined;
    if (!client) {
      if (r.same_device_repair) {
        this.out.warn(`the replaced account's one-time keys are still on the server for device ${r.device_id}, signed by its keys: peers that have no Olm session with the bot cannot reach it until they are claimed. Before starting the bot, claim them with a token of device ${r.device_id}: POST /_matrix/client/v3/keys/claim for that device until the answer is its fallback key (docs/convert.md; convert does it when HOMESERVER_URL and ACCESS_TOKEN are set). Do not run convert --force again: it would replace the merged store`);
      }
      return undefined;
    }
    const published = await publishedDeviceKeys(client, r.user_id, r.device_id);
    if (!published?.ed25519 || published.ed25519 === r.ed25519) return 0;
    const claimed = await claimOneTimeKeys(client, r.user_id, r.device_id);
    this.out.result(`  the server publishes other keys for device ${r.device_id} (ed25519 ${published.ed25519}): claimed the ${claimed} one-time keys that account left there (peers would refuse them); the bot uploads fresh ones, and the old device keys, on its next start`);
    return claimed;
  }

  private describe(r: ConvertReport, failedOutputPath: string, sqlitePassphrase: string, tokenOwner: { userId: string; deviceId?: string } | undefined) {
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
    // What the bot must bring to open this store: its passphrase and a token of this device.
    if (sqlitePassphrase === '') {
      out.result('  passphrase: the bot must open this store with "" (the empty passphrase), which is what upstream matrix-bot-sdk 0.8 passes');
    } else {
      out.result('  passphrase: the bot must open this store with the passphrase given in SQLITE_PASSPHRASE / --sqlite-passphrase, not "" (what upstream matrix-bot-sdk 0.8 passes)');
      out.warn('the SQLite store is not written with "": upstream matrix-bot-sdk 0.8 always passes "" and will fail at start with "Failed to initialize the store cipher"; keep this only for a bot that passes this passphrase to OlmMachine.initialize itself (docs/convert.md)');
    }
    if (tokenOwner) {
      out.result(`  access token: ${tokenOwner.userId}, device ${tokenOwner.deviceId ?? '(none named by the server)'}: the store's device, as the bot needs`);
    } else {
      out.result(`  access token: the bot's token must belong to device ${r.device_id} (matrix-bot-sdk 0.8 takes the device from bot-sdk.json, not from the token); set HOMESERVER_URL and ACCESS_TOKEN (or --check-token) to have it checked`);
    }
    if (r.dry_run) {
      if (r.existing_sqlite_store === 'with-account' || r.existing_sqlite_store === 'unreadable') {
        out.result(`a real run would refuse: matrix-sdk-crypto.sqlite3 already exists (${r.existing_sqlite_store}); --force renames it aside`);
      }
      out.result('dry run: nothing was written');
      return;
    }
    if (r.moved_aside) out.info(`the SQLite store that was there is kept as ${r.moved_aside}`);
    const repair = r.same_device_repair;
    if (repair) {
      out.result(`that store was a new account under the same device ${r.device_id} (ed25519 ${repair.sled_account?.ed25519}): restored the old account (ed25519 ${r.ed25519}, the keys peers know) and merged the replaced store's ${repair.read} room keys into it (added ${repair.added}, improved ${repair.improved}, already present ${repair.already_present}); on its next start the bot publishes the old keys again`);
    }
    out.result(`wrote ${r.written}: start the upgraded bot (matrix-bot-sdk 0.8) with an access token of device ${r.device_id}; it opens this store as that device`);
    out.warn(OLD_BOT_WARNING);
  }
}
