/**
 * `inspect` as an operator runs it: the CLI on copies of every committed fixture (what it says
 * against what the genuine code wrote, expected.json), beside an existing SQLite store, beside a
 * running bot, and against a real Synapse for the server's side. It never writes: the Sled store
 * and an existing SQLite store are hashed before and after.
 */
import anyTest, { type TestFn } from 'ava';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { committedFixture, committedFixtureNames, copyFixture, holdStoreLock, treeHashes, type Fixture } from './helpers/fixtures.js';
import { api, freshUser, useSynapse, type WithSynapse } from './helpers/homeserver.js';
import { tempDir } from './helpers/migration.js';
import { MatrixClient } from '../src/matrix/client.js';
import { inspectServer, recommend, type LocalInspection } from '../src/pipeline/inspect.js';

const test = anyTest as TestFn<WithSynapse>;
useSynapse(test);

interface InspectJson {
  status: string;
  sled: { store_version: number | null; cipher_format: string | null; value_kind: string; generation: string; passphrase_opens: boolean | null; bot_holds_lock: boolean; disk_bytes: number; live_bytes: number };
  counts: Record<string, { entries: number; damaged: number }>;
  room_keys: number;
  account: { user_id: string; device_id: string; ed25519?: string; curve25519?: string } | null;
  bot_sdk_device_id: string | null;
  device_check: string;
  sqlite: { state: string; room_keys: number | null; schema_version: number | null; account: { device_id: string; ed25519: string } | null; unreadable: [string, string] | null };
  server: { user_id: string; token_device_id: string | null; backup: { version: string; count: number; ours: boolean | null } | null; old_device_registered: boolean | null } | null;
  recommended: { path: string; line: string };
  estimates: { step: string; seconds: number }[];
}

function copied(t: { teardown(fn: () => Promise<void>): void }, name: string): Fixture {
  const f = copyFixture(committedFixture(name));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  return f;
}

const storeEnv = (f: Fixture, mig: string) => ({ CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: f.expected.passphrase ?? '', HOMESERVER_URL: undefined, ACCESS_TOKEN: undefined });

async function inspectJson(env: Record<string, string | undefined>, args: string[] = []): Promise<{ json: InspectJson; stderr: string; stdout: string; code: number | null }> {
  const r = await runCli(['inspect', '--json', ...args], env);
  return { json: JSON.parse(r.stdout) as InspectJson, stderr: r.stderr, stdout: r.stdout, code: r.code };
}

/** How each committed fixture keeps its values, and the generation that follows (the reference's table). */
const LAYOUT: Record<string, [values: string, generation: string]> = {
  plain: ['plaintext', 'bot-sdk-0.6.0-0.6.2'],
  'damaged-plain': ['plaintext', 'bot-sdk-0.6.0-0.6.2'],
  'mixed-upgrade': ['mixed', 'sled-0.2-cipher-added'],
  'msgpack-cipher': ['encrypted', 'bot-sdk-0.6.6-0.7.1'],
  'half-upgraded': ['plaintext', 'half-upgraded'],
};

test('inspect --json on every committed fixture: version, cipher, values, room keys and the device check as written; nothing written', async (t) => {
  const mig = await tempDir(t);
  const names = committedFixtureNames().filter((n) => n !== 'legacy-libolm');
  t.true(names.includes('half-upgraded'));
  for (const name of names) {
    const f = copied(t, name);
    const before = treeHashes(f.store);
    const { json, stderr, code } = await inspectJson(storeEnv(f, mig));
    t.is(code, 0, `${name}: ${stderr}`);
    t.is(json.status, 'ok');
    t.is(json.sled.store_version, f.expected.store_version, name);
    t.is(json.sled.cipher_format, f.expected.has_cipher ? ((f.expected as unknown as { cipher_format: string }).cipher_format) : null, name);
    const [values, generation] = LAYOUT[name] ?? ['encrypted', 'sled-0.2-passphrase'];
    t.is(json.sled.value_kind, values, name);
    t.is(json.sled.generation, generation, name);
    t.is(json.room_keys, f.expected.keys.length, name);
    t.is(json.counts.inbound_group_sessions!.damaged, f.expected.damaged.length, name);
    t.is(json.account?.user_id, f.expected.user_id, name);
    t.is(json.account?.device_id, f.expected.device_id, name);
    if (f.expected.identity_keys) t.is(json.account?.ed25519, f.expected.identity_keys.ed25519, name);
    t.is(json.bot_sdk_device_id, f.expected.device_id, name);
    t.is(json.device_check, 'match', name);
    t.is(json.sqlite.state, 'none', name);
    t.is(json.recommended.path, 'convert', name);
    t.deepEqual(json.estimates.map((e) => e.step), ['backup', 'convert'], name);
    t.true(json.sled.live_bytes > 0 && json.sled.live_bytes < json.sled.disk_bytes, name);
    if (name === 'half-upgraded') t.regex(stderr, /half-upgraded by matrix-bot-sdk 0\.6\.6.*the old bot can no longer start on it, this tool reads it/);
    t.deepEqual(treeHashes(f.store), before, `${name}: nothing written`);
  }

  const legacy = await runCli(['inspect'], storeEnv(committedFixture('legacy-libolm'), mig));
  t.is(legacy.code, 3, legacy.stderr);
  t.regex(legacy.stderr, /pre-0\.6 crypto store/);
});

test('inspect names a converted store, a wrong SQLite passphrase and a wrong store passphrase, writing nothing', async (t) => {
  const mig = await tempDir(t);
  const f = copied(t, 'plain');
  const env = storeEnv(f, mig);
  const converted = await runCli(['convert'], env);
  t.is(converted.code, 0, converted.stderr);
  const before = treeHashes(f.store);

  const { json, stdout } = await inspectJson(env);
  t.is(json.sqlite.state, 'converted');
  t.is(json.sqlite.room_keys, f.expected.keys.length);
  t.is(json.sqlite.schema_version, 9);
  t.is(json.sqlite.account?.ed25519, f.expected.identity_keys?.ed25519);
  t.is(json.recommended.path, 'none');
  t.regex(json.recommended.line, /already holds this account/);
  t.false(stdout.includes('"pickle"'));

  const wrong = await inspectJson(env, ['--sqlite-passphrase', 'not it']);
  t.is(wrong.json.sqlite.state, 'unreadable');
  t.is(wrong.json.sqlite.unreadable?.[0], 'wrong-passphrase');

  const table = await runCli(['inspect'], env);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /^SQLite store +converted: same device and identity keys/m);
  t.regex(table.stdout, /^recommended +nothing to migrate/m);
  t.deepEqual(treeHashes(f.store), before, 'neither store written, no -wal or -shm created');

  const locked = copied(t, 'msgpack-cipher');
  const noKey = await inspectJson({ ...storeEnv(locked, mig), STORE_PASSPHRASE: 'not the passphrase' });
  t.is(noKey.code, 0);
  t.is(noKey.json.sled.passphrase_opens, false);
  t.is(noKey.json.sled.store_version, 7);
  t.is(noKey.json.sled.cipher_format, 'msgpack');
  t.regex(noKey.json.recommended.line, /STORE_PASSPHRASE/);
});

test('inspect reads while the bot holds its store, says so, and never keeps it out', async (t) => {
  const mig = await tempDir(t);
  const f = copied(t, 'empty-passphrase');
  const bot = await holdStoreLock(f.store);
  try {
    const { json, code, stderr } = await inspectJson(storeEnv(f, mig));
    t.is(code, 0, stderr);
    t.true(json.sled.bot_holds_lock);
    t.is(json.room_keys, f.expected.keys.length);
  } finally {
    bot.release();
  }
  const table = await runCli(['inspect'], storeEnv(f, mig));
  t.regex(table.stdout, /^bot +not running/m);
});

test('inspect with a homeserver: whoami, the backup and whether its key is ours, the old device', async (t) => {
  const { synapse } = t.context;
  const f = copied(t, 'passphrase');
  const mig = await tempDir(t);
  const user = await freshUser(synapse);
  const env = { ...storeEnv(f, mig), HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: user.accessToken };

  const bare = await inspectJson(env);
  t.is(bare.code, 0, bare.stderr);
  t.deepEqual(bare.json.server, { user_id: user.userId, token_device_id: user.deviceId, backup: null, old_device_registered: false, published_ed25519: null, published_key_is: null } as unknown as InspectJson['server']);
  // The fixture's account is @bot:example.org: the token's user is not the store's.
  t.regex(bare.json.recommended.line, new RegExp(`access token belongs to ${user.userId}`));

  const enabled = await runCli(['enable'], env);
  t.is(enabled.code, 0, enabled.stderr);
  await synapse.login(user, f.expected.device_id);
  const ours = await inspectJson(env);
  t.is(ours.json.server?.backup?.ours, true);
  t.is(ours.json.server?.backup?.count, 0);
  t.true(ours.json.server?.old_device_registered);

  const other = await api(synapse, user.accessToken, 'POST', '/_matrix/client/v3/room_keys/version', {
    algorithm: 'm.megolm_backup.v1.curve25519-aes-sha2',
    auth_data: { public_key: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo' },
  });
  t.is(other.status, 200);
  const theirs = await runCli(['inspect'], env);
  t.regex(theirs.stdout, /^backup +version \d+, 0 keys, its key is NOT ours/m);
  t.regex(theirs.stdout, /^old device +still registered/m);
  t.false(theirs.stdout.includes(user.accessToken) || theirs.stderr.includes(user.accessToken));
  const recovery = await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8');
  for (const line of recovery.split('\n').filter((l) => l.startsWith('recovery_key'))) t.false(theirs.stdout.includes(line.split(': ')[1]!));
});

test('same device ID, other identity keys: inspect asks the homeserver which Ed25519 key it publishes for the device', async (t) => {
  const { synapse } = t.context;
  const user = await freshUser(synapse);
  const device = await synapse.login(user, 'UPGRADED');
  const sled = { user_id: user.userId, device_id: 'UPGRADED', curve25519: 'c'.repeat(43), ed25519: 'SledSledSledSledSledSledSledSledSledSledSle' };
  const sqlite = { ...sled, curve25519: 'd'.repeat(43), ed25519: 'SqliteSqliteSqliteSqliteSqliteSqliteSqliteS' };
  // The upgraded bot published its new account's keys for the old device ID.
  const upload = await api(synapse, device.accessToken, 'POST', '/_matrix/client/v3/keys/upload', {
    device_keys: { user_id: user.userId, device_id: 'UPGRADED', algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'], keys: { 'curve25519:UPGRADED': sqlite.curve25519, 'ed25519:UPGRADED': sqlite.ed25519 }, signatures: {} },
  });
  t.is(upload.status, 200, JSON.stringify(upload.json));
  const local = {
    sled: { account_device_id: 'UPGRADED' },
    account: sled,
    sqlite: { path: 'x', state: 'same-device-other-keys', schema_version: 9, encrypted: true, room_keys: 0, account: sqlite, unreadable: null },
  } as unknown as LocalInspection;
  const client = new MatrixClient(synapse.baseUrl, device.accessToken);
  const server = await inspectServer(client, local, await tempDir(t));
  t.is(server.published_ed25519, sqlite.ed25519);
  t.is(server.published_key_is, 'sqlite');
  t.true(server.old_device_registered);
  t.regex(recommend(local, server).line, /^merge: the upgraded bot already made a new account under device UPGRADED .*the server publishes the new SQLite account's Ed25519 key/);
});
