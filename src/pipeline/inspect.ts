/**
 * inspect: the read-only pre-flight. The store's side is native (crates/sqlite-convert/src/inspect.rs
 * over crates/sled-store/src/inspect.rs: one full read, no lock held, nothing written); here: the
 * homeserver's side (read-only requests only), the recommended path and the time each step takes.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { MIGRATION_FILES } from '../config.js';
import { getDevice, whoami } from '../matrix/account.js';
import type { MatrixClient } from '../matrix/client.js';
import { publishedDeviceKeys } from '../matrix/devices.js';
import { currentBackup } from '../matrix/key-backup.js';
import { call, native } from '../store/native.js';

export interface TreeSummary {
  name: string;
  entries: number;
  damaged: number;
  plaintext_values: number;
  encrypted_values: number;
  live_bytes: number;
}

/** crates/sled-store/src/inspect.rs `StoreSummary`. */
export interface StoreSummary {
  crypto_store_dir: string;
  sled_dir: string;
  sled_format_version: string;
  bot_holds_lock: boolean;
  store_version: number | null;
  cipher_format: 'json' | 'msgpack' | null;
  passphrase_opens: boolean | null;
  value_kind: 'none' | 'plaintext' | 'encrypted' | 'mixed' | 'unknown';
  generation: string;
  generation_description: string;
  disk_bytes: number;
  live_bytes: number;
  trees: TreeSummary[];
  damaged: number;
  damaged_entries: { tree: string; position: number; kind: string; message: string }[];
  account_user_id: string | null;
  account_device_id: string | null;
  bot_sdk_device_id: string | null;
  sled_would_refuse: string[];
  read_seconds: number;
}

/** Public keys only. */
export interface AccountKeys {
  user_id: string;
  device_id: string;
  curve25519: string;
  ed25519: string;
}

export type SqliteState = 'none' | 'without-account' | 'converted' | 'same-device-other-keys' | 'other-device' | 'other-user' | 'unreadable' | 'unknown';

export interface SqliteStoreReport {
  path: string;
  state: SqliteState;
  schema_version: number | null;
  encrypted: boolean | null;
  room_keys: number | null;
  account: AccountKeys | null;
  /** [code, sentence] */
  unreadable: [string, string] | null;
}

export interface LocalInspection {
  sled: StoreSummary;
  account: AccountKeys | null;
  sqlite: SqliteStoreReport;
}

export interface ServerInspection {
  user_id: string;
  /** The access token's device. */
  token_device_id: string | null;
  backup: { version: string; count: number; public_key: string | null; ours: boolean | null } | null;
  /** Whether the Sled account's device is still registered; null when there is no account to ask about. */
  old_device_registered: boolean | null;
  /** For the same-device-other-keys state: the Ed25519 key the server publishes for the device, and whose it is. */
  published_ed25519: string | null;
  published_key_is: 'sled' | 'sqlite' | 'neither' | null;
}

/** Sled keys of a tree that an operator reads as counts. */
export const COUNTED_TREES: readonly [tree: string, label: string][] = [
  ['inbound_group_sessions', 'room keys'],
  ['session', 'Olm sessions'],
  ['devices', 'devices'],
  ['identities', 'identities'],
  ['tracked_users', 'tracked users'],
  ['outbound_group_sessions', 'outbound sessions'],
  ['olm_hashes', 'Olm message hashes'],
];

/**
 * The rates measured by `npm run bench` (docs/benchmarks.md, 2026-12-03, 2 cores), the slowest of
 * the sizes measured where they differ: what the estimates below divide by.
 */
export const MEASURED_RATES = {
  /** "backup against cp": copy + SHA-256 of the store, 1.15 GB/s. */
  backupBytesPerSecond: 1.15e9,
  /** "convert": 10,728 sessions/s at 100k (merge is not measured: the same writes, so the same rate). */
  convertKeysPerSecond: 10_728,
  /** "Throughput against store size": end to end into a local Synapse, 13,199 keys/s at 1M. */
  uploadKeysPerSecond: 13_199,
  /** "Memory": verify of 1M keys in 71.4 s. */
  verifyKeysPerSecond: 14_005,
} as const;

export type MigrationPath = 'convert' | 'merge' | 'all' | 'none';

export interface Recommendation {
  path: MigrationPath;
  /** One line: what to run and why. */
  line: string;
}

export interface StepEstimate {
  step: string;
  seconds: number;
}

export async function inspectLocal(cryptoStorePath: string, passphrase: string, sqlitePassphrase: string | undefined): Promise<LocalInspection> {
  const json = await call(() => native().inspectStore({ cryptoStorePath, passphrase, sqlitePassphrase }));
  return JSON.parse(json) as LocalInspection;
}

export function roomKeys(local: LocalInspection): number {
  const tree = local.sled.trees.find((t) => t.name === 'inbound_group_sessions');
  return tree ? tree.entries - tree.damaged : 0;
}

/** The homeserver's side: GET requests and one /keys/query, nothing that changes the account. */
export async function inspectServer(client: MatrixClient, local: LocalInspection, migrationDir: string): Promise<ServerInspection> {
  const me = await whoami(client);
  const backup = await currentBackup(client);
  const ourKey = await readOurPublicKey(migrationDir);
  const oldDevice = local.account?.device_id ?? local.sled.account_device_id ?? null;
  let published: string | null = null;
  let publishedIs: ServerInspection['published_key_is'] = null;
  // Only the token's own user is asked about: another user's keys would be a federation request.
  if (local.sqlite.state === 'same-device-other-keys' && local.account && local.account.user_id === me.user_id) {
    published = (await publishedDeviceKeys(client, local.account.user_id, local.account.device_id))?.ed25519 ?? null;
    publishedIs = published === local.account.ed25519 ? 'sled' : published === local.sqlite.account?.ed25519 ? 'sqlite' : 'neither';
  }
  return {
    user_id: me.user_id,
    token_device_id: me.device_id ?? null,
    backup: backup && {
      version: backup.version,
      count: backup.count,
      public_key: backup.auth_data.public_key ?? null,
      ours: ourKey === undefined ? null : backup.auth_data.public_key === ourKey,
    },
    old_device_registered: oldDevice === null ? null : (await getDevice(client, oldDevice)) !== null,
    published_ed25519: published,
    published_key_is: publishedIs,
  };
}

/** MIGRATION_DIR/backup-public-key.txt, when an earlier `enable` wrote it. */
async function readOurPublicKey(migrationDir: string): Promise<string | undefined> {
  try {
    return (await fs.readFile(path.join(migrationDir, MIGRATION_FILES.publicKey), 'utf8')).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export function recommend(local: LocalInspection, server: ServerInspection | null): Recommendation {
  const { sled, sqlite, account } = local;
  const damaged = sled.damaged > 0 ? ` (${sled.damaged} damaged entries: add --skip-errors to carry the rest)` : '';
  if (sled.passphrase_opens === false) {
    return { path: 'none', line: 'first set STORE_PASSPHRASE (or --store-passphrase) to the passphrase that opens the Sled store, then inspect again' };
  }
  if (server && account && server.user_id !== account.user_id) {
    return { path: 'none', line: `the access token belongs to ${server.user_id}, the store to ${account.user_id}: use the bot's own token` };
  }
  switch (sqlite.state) {
    case 'converted':
      return { path: 'none', line: 'nothing to migrate: matrix-sdk-crypto.sqlite3 already holds this account with its identity keys; start the upgraded bot' };
    case 'same-device-other-keys':
      return {
        path: 'merge',
        line: `merge${damaged}: the upgraded bot already made a new account under device ${account!.device_id} (other identity keys${server?.published_key_is ? `; the server publishes the ${server.published_key_is === 'sled' ? 'old Sled' : server.published_key_is === 'sqlite' ? 'new SQLite' : 'neither'} account's Ed25519 key` : ''}): merge the old room keys into it (the already-upgraded repair, docs/troubleshooting.md)`,
      };
    case 'other-device':
      return { path: 'merge', line: `merge${damaged}: the upgraded bot already runs as device ${sqlite.account!.device_id}; merge the old device's room keys into its store` };
    case 'other-user':
      return { path: 'none', line: `matrix-sdk-crypto.sqlite3 belongs to ${sqlite.account!.user_id}, the Sled store to ${account!.user_id}: check CRYPTO_STORE_PATH` };
    case 'unreadable':
      return { path: 'none', line: `matrix-sdk-crypto.sqlite3 cannot be read (${sqlite.unreadable?.[1] ?? 'unknown reason'}): set SQLITE_PASSPHRASE, or move it aside (convert --force renames it)` };
    default:
      break;
  }
  if (!account) {
    return { path: 'all', line: `all${damaged}: the Sled store's Olm account cannot be read, so its device cannot be kept; upload the room keys to server-side key backup for a new device` };
  }
  return { path: 'convert', line: `convert${damaged}: keeps device ${account.device_id} and every key; the upgraded bot opens the result directly` };
}

export function estimate(local: LocalInspection, path: MigrationPath): StepEstimate[] {
  const keys = roomKeys(local);
  const r = MEASURED_RATES;
  const backup = { step: 'backup', seconds: local.sled.disk_bytes / r.backupBytesPerSecond };
  switch (path) {
    case 'convert':
      return [backup, { step: 'convert', seconds: keys / r.convertKeysPerSecond }];
    case 'merge':
      return [backup, { step: 'merge', seconds: keys / r.convertKeysPerSecond }];
    case 'all':
      return [backup, { step: 'upload', seconds: keys / r.uploadKeysPerSecond }, { step: 'verify', seconds: keys / r.verifyKeysPerSecond }];
    case 'none':
      return [];
  }
}
