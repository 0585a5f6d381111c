/**
 * `convert` as an operator runs it: the CLI on copies of genuine stores. What the converted store
 * holds is proven in Rust (crates/sqlite-convert/tests/convert.rs opens it with matrix-sdk-crypto
 * 0.9's OlmMachine and decrypts the recorded events and Olm messages); here: exit codes, the one
 * line of each refusal, nothing written on failure, the source never touched, no secret printed.
 */
import test from 'ava';
import { existsSync, promises as fs, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalSynapse } from '../src/devtools/local-synapse.js';
import { runCli } from './helpers/cli.js';
import { openAsTheBot } from './helpers/upgraded-bot.js';
import { committedFixture, copyFixture, generatedFixture, holdStoreLock, treeHashes, type Fixture } from './helpers/fixtures.js';

async function world(t: { teardown(fn: () => Promise<void>): void }, name: string): Promise<{ f: Fixture; mig: string; env: Record<string, string> }> {
  const f = copyFixture(committedFixture(name));
  const mig = await fs.mkdtemp(path.join(os.tmpdir(), 'convert-'));
  t.teardown(async () => {
    await fs.rm(mig, { recursive: true, force: true });
    await fs.rm(f.dir, { recursive: true, force: true });
  });
  return { f, mig, env: { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: f.expected.passphrase ?? '' } };
}

const sqlite = (f: Fixture) => path.join(f.store, 'matrix-sdk-crypto.sqlite3');
/** The store folder holds only what the bot put there: nothing half-written beside it. */
const storeEntries = (f: Fixture) => readdirSync(f.store).sort();

test('convert writes the SQLite store, keeps the Sled store byte for byte, prints no secret', async (t) => {
  const { f, mig, env } = await world(t, 'empty-passphrase');
  const before = treeHashes(path.join(f.store, 'matrix-sdk-crypto'));
  const dry = await runCli(['convert', '--dry-run'], env);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, new RegExp(`would convert the Sled store of ${f.expected.user_id.replace(/[.]/g, '\\.')}, device ${f.expected.device_id}`));
  t.regex(dry.stdout, new RegExp(`room keys: ${f.expected.keys.length}\\b`));
  t.regex(dry.stdout, new RegExp(`Olm sessions: ${f.expected.olm!.olm_sessions}\\b`));
  t.regex(dry.stdout, new RegExp(`tracked users: ${f.expected.olm!.tracked_users.length}\\b`));
  t.regex(dry.stdout, /dry run: nothing was written/);
  t.deepEqual(storeEntries(f), ['bot-sdk.json', 'matrix-sdk-crypto']);

  const r = await runCli(['convert'], env);
  t.is(r.code, 0, r.stderr);
  t.true(existsSync(sqlite(f)));
  t.is(statSync(sqlite(f)).mode & 0o777, 0o600, 'the store holds keys: 0600');
  t.deepEqual(storeEntries(f), ['bot-sdk.json', 'matrix-sdk-crypto', 'matrix-sdk-crypto.sqlite3']);
  t.regex(r.stdout, /wrote .*matrix-sdk-crypto\.sqlite3/);
  t.regex(r.stderr, /never start the old bot against the Sled store again/);
  t.deepEqual(treeHashes(path.join(f.store, 'matrix-sdk-crypto')), before, 'the Sled store is unchanged');
  t.deepEqual(readdirSync(mig), [], 'nothing written to MIGRATION_DIR');
  const printed = dry.stdout + dry.stderr + r.stdout + r.stderr;
  for (const k of f.expected.keys) t.false(printed.includes(k.session_key), 'no session key printed');
  // A plaintext key would show as its base64 inside the SQLite file if the store were unencrypted.
  const file = readFileSync(sqlite(f)).toString('latin1');
  t.false(f.expected.keys.some((k) => file.includes(k.session_key.slice(0, 40))), 'the SQLite store is encrypted');
});

test('convert refuses an existing account (exit 15) unless --force, which keeps it aside', async (t) => {
  const { f, env } = await world(t, 'plain');
  t.is((await runCli(['convert'], env)).code, 0);
  const first = await fs.readFile(sqlite(f));
  const again = await runCli(['convert'], env);
  t.is(again.code, 15, again.stderr);
  t.regex(again.stderr, /^error: .*already holds a SQLite crypto store with an Olm account.*Fix: .*--force/m);
  t.is(again.stderr.trim().split('\n').length, 1, 'one line');
  t.deepEqual(await fs.readFile(sqlite(f)), first, 'nothing written');
  const forced = await runCli(['convert', '--force'], env);
  t.is(forced.code, 0, forced.stderr);
  const aside = readdirSync(f.store).find((n) => n.startsWith('matrix-sdk-crypto.sqlite3.before-convert-'));
  t.truthy(aside, forced.stderr);
  t.deepEqual(await fs.readFile(path.join(f.store, aside!)), first, 'the old store is kept byte for byte');
});

test('convert refuses a running bot (4) and a wrong passphrase (5), writing nothing', async (t) => {
  const { f, env } = await world(t, 'passphrase');
  const wrong = await runCli(['convert'], { ...env, STORE_PASSPHRASE: 'not it' });
  t.is(wrong.code, 5, wrong.stderr);
  t.regex(wrong.stderr, /passphrase is wrong.*Fix: set STORE_PASSPHRASE/);
  t.deepEqual(storeEntries(f), ['bot-sdk.json', 'matrix-sdk-crypto']);

  const lock = await holdStoreLock(f.store);
  t.teardown(() => lock.release());
  const locked = await runCli(['convert'], env);
  t.is(locked.code, 4, locked.stderr);
  t.regex(locked.stderr, /in use by another process.*Fix: stop the bot/);
  t.deepEqual(storeEntries(f), ['bot-sdk.json', 'matrix-sdk-crypto']);
});

test('convert is strict on damaged entries (6, nothing written); --skip-errors lists them', async (t) => {
  const { f, mig, env } = await world(t, 'damaged');
  const strict = await runCli(['convert'], env);
  t.is(strict.code, 6, strict.stderr);
  t.regex(strict.stderr, /damaged entry in the Sled tree inbound_group_sessions.*Fix: rerun with --skip-errors/);
  t.deepEqual(storeEntries(f), ['bot-sdk.json', 'matrix-sdk-crypto']);

  const r = await runCli(['convert', '--skip-errors'], env);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`room keys: ${f.expected.keys.length}, ${f.expected.damaged.length} damaged`));
  const failed = JSON.parse(await fs.readFile(path.join(mig, 'failed-sessions.json'), 'utf8')) as { total_failed: number; failed: { tree: string; key_hex: string }[] };
  t.is(failed.total_failed, f.expected.damaged.length);
  t.deepEqual(failed.failed.map((d) => d.key_hex).sort(), f.expected.damaged.map((d) => d.sled_key_hex).sort());
});

// Serial: nothing else in this file runs meanwhile, so the watcher that times the first kill runs on time.
test.serial('convert killed at any moment leaves no store or a whole one; the rerun completes and sweeps the temporary folder', async (t) => {
  const f = copyFixture(generatedFixture('many', 3000, 5));
  const mig = await fs.mkdtemp(path.join(os.tmpdir(), 'convert-kill-'));
  t.teardown(async () => {
    await fs.rm(mig, { recursive: true, force: true });
    await fs.rm(f.dir, { recursive: true, force: true });
  });
  const env = { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig };
  const before = treeHashes(path.join(f.store, 'matrix-sdk-crypto'));
  let killed = 0;
  // The first kill lands as soon as the temporary store exists (the run is then surely writing,
  // however fast the machine: a whole run takes under a second), the others at growing delays, up
  // to the final rename.
  const writing = () => readdirSync(f.store).some((n) => n.startsWith('.sqlite-convert-'));
  const kills = [{ killWhenSeen: writing }, ...[200, 450, 700, 950, 1200].map((ms) => ({ killAfterMs: ms }))];
  for (const kill of kills) {
    const r = await runCli(['convert'], env, kill);
    if (r.signal !== 'SIGKILL') break;
    killed++;
    const temps = readdirSync(f.store).filter((n) => n.startsWith('.'));
    // A killed run also leaves its lock file (with a dead holder: the next run takes it over).
    t.true(temps.every((n) => /^\.sqlite-convert-\d+\.incomplete$/.test(n) || n === '.sled-migration-tool.lock'), temps.join(', '));
    // The rename is the last step: after a kill there is no store, or the whole checked one.
    if (existsSync(sqlite(f))) break;
  }
  t.true(killed > 0, 'at least one run was killed mid-way');
  const rerun = await runCli(existsSync(sqlite(f)) ? ['convert', '--force'] : ['convert'], env);
  t.is(rerun.code, 0, rerun.stderr);
  t.regex(rerun.stdout, new RegExp(`room keys: ${f.expected.keys.length}\\b`));
  t.deepEqual(readdirSync(f.store).filter((n) => n.startsWith('.')), [], 'abandoned temporary stores removed');
  t.deepEqual(treeHashes(path.join(f.store, 'matrix-sdk-crypto')), before, 'the Sled store is unchanged');
});

// What the upgraded bot opens: matrix-bot-sdk 0.8.0 passes "" and starts as bot-sdk.json's device.

test('the SQLite store is written with "" whatever the Sled passphrase: SQLITE_PASSPHRASE="" and --sqlite-passphrase= give the same store', async (t) => {
  const runs = [
    { name: 'no SQLite option', args: [] as string[], env: {} },
    { name: 'SQLITE_PASSPHRASE=""', args: [], env: { SQLITE_PASSPHRASE: '' } },
    { name: '--sqlite-passphrase=', args: ['--sqlite-passphrase='], env: {} },
  ];
  const views = [];
  for (const r of runs) {
    const { f, env } = await world(t, 'passphrase');
    t.truthy(f.expected.passphrase, 'the Sled store has a non-empty passphrase');
    const out = await runCli(['convert', ...r.args], { ...env, ...r.env });
    t.is(out.code, 0, `${r.name}: ${out.stderr}`);
    t.regex(out.stdout, /passphrase: the bot must open this store with "" .*upstream matrix-bot-sdk 0\.8/, r.name);
    t.regex(out.stdout, /access token: the bot's token must belong to device BOTDEVICE/, r.name);
    t.notRegex(out.stderr, /Failed to initialize the store cipher/, r.name);
    const view = await openAsTheBot(f.store, '');
    t.false('error' in view, `${r.name}: ${JSON.stringify(view)}`);
    t.like(view, { user_id: f.expected.user_id, device_id: f.expected.device_id, curve25519: f.expected.identity_keys!.curve25519, ed25519: f.expected.identity_keys!.ed25519, room_keys: f.expected.keys.length }, r.name);
    t.deepEqual(await openAsTheBot(f.store, f.expected.passphrase!), { error: 'Failed to initialize the store cipher' }, `${r.name}: not written with the Sled passphrase`);
    // docs/troubleshooting.md: a custom bot passing null for a store written with "".
    t.deepEqual(await openAsTheBot(f.store, null), { error: 'missing field `user_id`' }, r.name);
    views.push(view);
  }
  t.deepEqual(views[1], views[0]);
  t.deepEqual(views[2], views[0]);
});

test('SQLITE_PASSPHRASE=x gives a store only x opens, with a warning that upstream matrix-bot-sdk will fail', async (t) => {
  const { f, env } = await world(t, 'empty-passphrase');
  const out = await runCli(['convert'], { ...env, SQLITE_PASSPHRASE: 'x' });
  t.is(out.code, 0, out.stderr);
  t.regex(out.stderr, /warning: the SQLite store is not written with "": upstream matrix-bot-sdk 0\.8 always passes "" and will fail at start with "Failed to initialize the store cipher"/);
  t.deepEqual(await openAsTheBot(f.store, ''), { error: 'Failed to initialize the store cipher' });
  t.like(await openAsTheBot(f.store, 'x'), { device_id: f.expected.device_id, ed25519: f.expected.identity_keys!.ed25519 });
  t.false((out.stdout + out.stderr).includes('"x"'), 'the passphrase itself is not printed');
});

test('STORE_PASSPHRASE="" is a passphrase, not "unset"', async (t) => {
  const empty = await world(t, 'empty-passphrase');
  t.is((await runCli(['convert', '--dry-run'], { ...empty.env, STORE_PASSPHRASE: '' })).code, 0);
  const other = await world(t, 'passphrase');
  const wrong = await runCli(['convert', '--dry-run'], { ...other.env, STORE_PASSPHRASE: '' });
  t.is(wrong.code, 5, wrong.stderr);
  t.regex(wrong.stderr, /passphrase is wrong/);
});

test('bot-sdk.json naming another device than the account is refused (18), nothing written', async (t) => {
  const { f, env } = await world(t, 'plain');
  await fs.writeFile(path.join(f.store, 'bot-sdk.json'), JSON.stringify({ deviceId: 'OTHERDEVICE', rooms: {} }));
  const r = await runCli(['convert'], env);
  t.is(r.code, 18, r.stderr);
  t.regex(r.stderr, /^error: bot-sdk\.json names device OTHERDEVICE, but the Olm account in the Sled store is device BOTDEVICE.*Fix: set "deviceId" in bot-sdk\.json/m);
  t.is(r.stderr.trim().split('\n').length, 1, 'one line');
  t.deepEqual(storeEntries(f), ['bot-sdk.json', 'matrix-sdk-crypto']);
});

test('with HOMESERVER_URL and ACCESS_TOKEN, a token of another device is refused before anything is written (18); the store\'s device passes', async (t) => {
  // The fixtures' user is @bot:example.org: a Synapse of that name can log it in with any device ID.
  const synapse = await LocalSynapse.start({ serverName: 'example.org' });
  t.teardown(() => synapse.stop());
  const bot = await synapse.registerUser('bot');
  const { f, env } = await world(t, 'plain');
  const other = await synapse.login(bot, 'OTHERDEVICE');
  const refused = await runCli(['convert'], { ...env, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: other.accessToken });
  t.is(refused.code, 18, refused.stderr);
  t.regex(refused.stderr, /^error: the access token belongs to @bot:example\.org, device OTHERDEVICE, but the store is @bot:example\.org, device BOTDEVICE.*Fix: log in for the store's device \(POST \/_matrix\/client\/v3\/login with "device_id"/m);
  t.is(refused.stderr.trim().split('\n').length, 1, 'one line');
  t.deepEqual(storeEntries(f), ['bot-sdk.json', 'matrix-sdk-crypto'], 'nothing written');
  t.false((refused.stdout + refused.stderr).includes(other.accessToken), 'the token is not printed');

  const kept = await synapse.login(bot, 'BOTDEVICE');
  const ok = await runCli(['convert', '--json'], { ...env, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: kept.accessToken });
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stderr, /access token: @bot:example\.org, device BOTDEVICE: the store's device/);
  const result = JSON.parse(ok.stdout) as Record<string, unknown>;
  t.like(result, { command: 'convert', status: 'ok', exit_code: 0, device_id: 'BOTDEVICE', token_checked: true, sqlite_passphrase_is_empty: true });
  t.false(ok.stdout.includes(kept.accessToken));
  t.like(await openAsTheBot(f.store, ''), { device_id: 'BOTDEVICE', room_keys: f.expected.keys.length });
});
