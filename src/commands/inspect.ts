import { Command, Option } from 'clipanion';
import { setting } from '../environment.js';
import { COUNTED_TREES, estimate, inspectLocal, inspectServer, recommend, roomKeys, type LocalInspection, type ServerInspection, type StepEstimate } from '../pipeline/inspect.js';
import { HomeserverCommand } from './homeserver.js';

export class InspectCommand extends HomeserverCommand {
  static override paths = [['inspect']];
  static override usage = Command.Usage({
    description: 'Show what the crypto store folder holds and which migration path fits, changing nothing',
    details:
      'A read-only pre-flight: where the Sled store is, whether the bot holds it, which matrix-bot-sdk generation wrote it (DB version, store cipher, values in the clear or encrypted; the half-upgraded store of bot-sdk 0.6.6 is named), whether the passphrase opens it, the account (public keys only), entries and damaged entries per tree in one full read, bot-sdk.json\'s device against the account\'s, and an existing matrix-sdk-crypto.sqlite3 beside it (converted already, a new account under the same device ID, or another device). With HOMESERVER_URL and ACCESS_TOKEN also the server\'s side: whoami, the current backup and whether its key is ours, whether the old device is still registered. Ends with the recommended path and the time each step takes at the measured rates. Writes nothing and holds no lock: it can run while the bot runs.',
    examples: [
      ['Inspect the store', 'sled-migration-tool inspect'],
      ['As one JSON object', 'sled-migration-tool inspect --json'],
    ],
  });

  // The homeserver's side is optional: without HOMESERVER_URL and ACCESS_TOKEN only the folder is inspected.
  static override homeserverRequired = false;

  sqlitePassphrase = Option.String('--sqlite-passphrase', { description: 'Passphrase of an existing SQLite store (SQLITE_PASSPHRASE, default: the store passphrase, "" as matrix-bot-sdk passes)' });

  protected async perform(): Promise<number> {
    const loc = this.locations();
    const foundBy = setting(this.cryptoStorePath, 'CRYPTO_STORE_PATH') ? 'CRYPTO_STORE_PATH' : 'STORAGE_PATH/encrypted';
    const local = await inspectLocal(loc.cryptoStorePath, loc.storePassphrase, setting(this.sqlitePassphrase, 'SQLITE_PASSPHRASE'));
    const client = this.optionalClient();
    const server = client ? await inspectServer(client, local, loc.migrationDir) : null;
    const recommended = recommend(local, server);
    const steps = estimate(local, recommended.path);
    const { sled } = local;
    this.record({
      crypto_store_path: loc.cryptoStorePath,
      found_by: foundBy,
      sled: { ...sled, trees: undefined, damaged_entries: undefined, account_user_id: undefined, account_device_id: undefined, bot_sdk_device_id: undefined },
      counts: Object.fromEntries(sled.trees.map((t) => [t.name, { entries: t.entries, damaged: t.damaged }])),
      room_keys: roomKeys(local),
      damaged_entries: sled.damaged_entries,
      account: local.account ?? (sled.account_user_id ? { user_id: sled.account_user_id, device_id: sled.account_device_id } : null),
      bot_sdk_device_id: sled.bot_sdk_device_id,
      device_check: deviceCheck(local),
      sqlite: local.sqlite,
      server,
      recommended,
      estimates: steps,
    });
    this.describe(loc.cryptoStorePath, foundBy, local, server, recommended.line, steps);
    return 0;
  }

  private describe(storePath: string, foundBy: string, local: LocalInspection, server: ServerInspection | null, recommendation: string, steps: StepEstimate[]) {
    const { sled, sqlite, account } = local;
    const rows: [string, string][] = [
      ['store', `${storePath} (from ${foundBy})`],
      ['bot', sled.bot_holds_lock ? 'RUNNING: it holds the Sled store (counts read meanwhile may be off; stop it before migrating)' : 'not running (no lock on the Sled store)'],
      ['format', `Sled ${sled.sled_format_version}, DB version ${sled.store_version ?? 'none'}, store cipher ${sled.cipher_format ?? 'none'}, values ${sled.value_kind}`],
      ['written by', sled.generation_description],
      ['passphrase', sled.passphrase_opens === null ? 'not needed (no store cipher)' : sled.passphrase_opens ? 'opens the store' : 'does NOT open the store'],
      ['size', `${mb(sled.disk_bytes)} on disk, ${mb(sled.live_bytes)} live (${amplification(sled.disk_bytes, sled.live_bytes)})`],
    ];
    if (account) rows.push(['account', `${account.user_id}, device ${account.device_id}, ed25519 ${account.ed25519}, curve25519 ${account.curve25519}`]);
    else if (sled.account_user_id) rows.push(['account', `${sled.account_user_id}, device ${sled.account_device_id ?? '?'} (the Olm account does not unpickle)`]);
    if (sled.trees.length) {
      rows.push(['entries', COUNTED_TREES.map(([tree, label]) => `${label} ${sled.trees.find((t) => t.name === tree)?.entries ?? 0}`).join(', ')]);
      rows.push(['damaged', `${sled.damaged}${sled.damaged_entries.length ? ` (${[...new Set(sled.damaged_entries.map((d) => `${d.tree}: ${d.kind}`))].join(', ')})` : ''}, read in ${sled.read_seconds.toFixed(2)} s`]);
    }
    rows.push(['bot-sdk.json', deviceLine(local)]);
    rows.push(['SQLite store', sqliteLine(local)]);
    if (server) {
      rows.push(['server', `${server.user_id}, token of device ${server.token_device_id ?? '?'}`]);
      rows.push(['backup', server.backup ? `version ${server.backup.version}, ${server.backup.count} keys, ${server.backup.ours === null ? 'no key of ours in MIGRATION_DIR to compare' : server.backup.ours ? 'its key is ours (MIGRATION_DIR)' : 'its key is NOT ours'}` : 'none']);
      if (server.old_device_registered !== null) rows.push(['old device', server.old_device_registered ? 'still registered' : 'not registered (deleted)']);
      if (server.published_ed25519 !== null || server.published_key_is) rows.push(['published key', `${server.published_ed25519 ?? 'none'} (${server.published_key_is})`]);
    }
    rows.push(['recommended', recommendation]);
    if (steps.length) rows.push(['estimate', steps.map((s) => `${s.step} ${duration(s.seconds)}`).join(', ') + ' (docs/benchmarks.md rates)']);
    const width = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) this.out.result(`${k.padEnd(width)}  ${v}`);
    if (sled.generation === 'half-upgraded') {
      this.out.warn('this store is half-upgraded: the old bot cannot start on it any more, but this tool reads it (docs/troubleshooting.md)');
    }
  }
}

function deviceCheck(local: LocalInspection): 'match' | 'differs' | 'no-device-in-bot-sdk-json' | 'no-account' {
  const accountDevice = local.account?.device_id ?? local.sled.account_device_id;
  if (!accountDevice) return 'no-account';
  if (!local.sled.bot_sdk_device_id) return 'no-device-in-bot-sdk-json';
  return local.sled.bot_sdk_device_id === accountDevice ? 'match' : 'differs';
}

function deviceLine(local: LocalInspection): string {
  const device = local.sled.bot_sdk_device_id;
  switch (deviceCheck(local)) {
    case 'match':
      return `device ${device}, the account's`;
    case 'differs':
      return `device ${device}, but the account is device ${local.account?.device_id ?? local.sled.account_device_id}`;
    case 'no-device-in-bot-sdk-json':
      return 'no device ID';
    case 'no-account':
      return `device ${device ?? 'none'} (no account to compare)`;
  }
}

function sqliteLine(local: LocalInspection): string {
  const s = local.sqlite;
  const held = s.account ? `${s.account.user_id}, device ${s.account.device_id}, ed25519 ${s.account.ed25519}, ${s.room_keys} room keys, schema ${s.schema_version}` : '';
  switch (s.state) {
    case 'none':
      return 'none';
    case 'without-account':
      return `exists without an account (schema ${s.schema_version})`;
    case 'converted':
      return `converted: same device and identity keys (${held})`;
    case 'same-device-other-keys':
      return `same device ID, OTHER identity keys: the upgraded bot made a new account (${held})`;
    case 'other-device':
      return `another device: the bot was upgraded as a new device (${held})`;
    case 'other-user':
      return `another user's store (${held})`;
    case 'unreadable':
      return `unreadable: ${s.unreadable?.[1] ?? '?'}`;
    case 'unknown':
      return `holds ${held || 'an account'}; the Sled account could not be read to compare`;
  }
}

function mb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(bytes >= 1e7 ? 0 : 2)} MB`;
}

function amplification(disk: number, live: number): string {
  return live > 0 ? `${(disk / live).toFixed(1)}× space amplification` : 'no live data read';
}

function duration(seconds: number): string {
  if (seconds < 1) return '< 1 s';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
