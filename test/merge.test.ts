/**
 * `merge` as an operator runs it, on copies of genuine Sled stores beside the SQLite store an
 * upgraded bot left (written by matrix-sdk-crypto 0.9: test/helpers/upgraded-bot.ts). What the
 * merged store holds, opened as the bot opens it, is proven in Rust (crates/sqlite-convert/tests/
 * merge.rs); here: the counts, the refusals (exit code, one line, nothing written), a kill leaving
 * the store byte-identical, and an Element export merging the same keys as the store.
 */
import test from 'ava';
import { existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { committedFixture, copyFixture, generatedFixture, treeHashes, type Fixture } from './helpers/fixtures.js';
import { runningBot, upgradedBotStore } from './helpers/upgraded-bot.js';

const sqlite = (f: Fixture) => path.join(f.store, 'matrix-sdk-crypto.sqlite3');
/** What a refusal must leave as it was: the folder's listing and the store's bytes. */
const snapshot = (f: Fixture) => ({ entries: readdirSync(f.store).sort(), store: existsSync(sqlite(f)) ? readFileSync(sqlite(f)) : null });

async function world(t: { teardown(fn: () => Promise<void>): void }, f0: Fixture, user = f0.expected.user_id) {
  const f = copyFixture(f0);
  const mig = await fs.mkdtemp(path.join(os.tmpdir(), 'merge-'));
  t.teardown(async () => {
    await fs.rm(mig, { recursive: true, force: true });
    await fs.rm(f.dir, { recursive: true, force: true });
  });
  const ed25519 = user ? upgradedBotStore(f.store, user, 'NEWDEVICE') : '';
  return { f, mig, ed25519, env: { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: f0.expected.passphrase ?? '' } };
}

test('merge adds every Sled key to the upgraded bot\'s store, names the counts, keeps the old store aside; an Element export merges the same keys', async (t) => {
  const fixture = committedFixture('plain');
  const n = fixture.expected.keys.length;
  const { f, mig, ed25519, env } = await world(t, fixture);
  const sled = treeHashes(path.join(f.store, 'matrix-sdk-crypto'));
  const before = snapshot(f);

  const dry = await runCli(['merge', '--dry-run'], env);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, new RegExp(`would merge ${n} room keys of the Sled store into the store of @bot:example\\.org, device NEWDEVICE \\(identity keys kept: ed25519 ${ed25519.replace(/[+/]/g, '\\$&')}\\)`));
  t.regex(dry.stdout, new RegExp(`added: ${n}; improved .*: 0; already present: 0; damaged, skipped: 0`));
  t.deepEqual(snapshot(f), before, 'a dry run writes nothing');

  const r = await runCli(['merge', '--json'], env);
  t.is(r.code, 0, r.stderr);
  const json = JSON.parse(r.stdout) as Record<string, unknown>;
  t.like(json, { command: 'merge', status: 'ok', device_id: 'NEWDEVICE', read: n, added: n, improved: 0, already_present: 0, damaged: 0, room_keys_before: 1, room_keys_after: n + 1 });
  const kept = readdirSync(f.store).find((e) => e.startsWith('matrix-sdk-crypto.sqlite3.before-merge-'));
  t.truthy(kept, r.stderr);
  t.deepEqual(readFileSync(path.join(f.store, kept!)), before.store, 'the previous store is kept byte for byte');
  t.deepEqual(treeHashes(path.join(f.store, 'matrix-sdk-crypto')), sled, 'the Sled store is unchanged');
  const printed = dry.stdout + dry.stderr + r.stdout + r.stderr;
  for (const k of fixture.expected.keys) t.false(printed.includes(k.session_key), 'no session key printed');

  // The same keys through an Element export, into another upgraded bot's store.
  const exported = path.join(mig, 'element-keys.txt');
  const ex = await runCli(['extract', '--format', 'megolm-export', '--output', exported], { ...env, EXPORT_PASSPHRASE: 'pw' });
  t.is(ex.code, 0, ex.stderr);
  const other = await world(t, fixture);
  const fromExport = await runCli(['merge', '--from', exported, '--json'], { ...other.env, EXPORT_PASSPHRASE: 'pw' });
  t.is(fromExport.code, 0, fromExport.stderr);
  t.like(JSON.parse(fromExport.stdout), { read: n, added: n, room_keys_after: n + 1 });
  const thenStore = await runCli(['merge', '--json'], other.env);
  t.is(thenStore.code, 0, thenStore.stderr);
  t.like(JSON.parse(thenStore.stdout), { read: n, added: 0, improved: 0, already_present: n }, 'the export held every key of the store, as well');
});

test('merge refuses, in one line and writing nothing: no SQLite store (20), wrong passphrase or other user (21), a running bot (22)', async (t) => {
  const fixture = committedFixture('plain');
  const oneLine = (stderr: string) => t.is(stderr.trim().split('\n').length, 1, stderr);

  const none = await world(t, fixture, '');
  const missing = await runCli(['merge'], none.env);
  t.is(missing.code, 20, missing.stderr);
  t.regex(missing.stderr, /^error: there is no SQLite crypto store at .*Fix: .*convert instead/);
  oneLine(missing.stderr);
  t.deepEqual(readdirSync(none.f.store).sort(), ['bot-sdk.json', 'matrix-sdk-crypto']);

  const w = await world(t, fixture);
  const before = snapshot(w.f);
  const wrong = await runCli(['merge'], { ...w.env, SQLITE_PASSPHRASE: 'not it' });
  t.is(wrong.code, 21, wrong.stderr);
  t.regex(wrong.stderr, /cannot open it with this SQLITE_PASSPHRASE.*Fix: check SQLITE_PASSPHRASE/);
  oneLine(wrong.stderr);
  t.deepEqual(snapshot(w.f), before);

  const stranger = await world(t, fixture, '@someone:example.org');
  const otherBefore = snapshot(stranger.f);
  const other = await runCli(['merge'], stranger.env);
  t.is(other.code, 21, other.stderr);
  t.regex(other.stderr, /belongs to @someone:example\.org, the Sled store to @bot:example\.org/);
  oneLine(other.stderr);
  t.deepEqual(snapshot(stranger.f), otherBefore);

  const bot = await runningBot(w.f.store);
  t.teardown(() => bot.kill());
  const running = snapshot(w.f);
  const inUse = await runCli(['merge'], w.env);
  t.is(inUse.code, 22, inUse.stderr);
  t.regex(inUse.stderr, /is in use: process \d+ holds a SQLite lock.*Fix: stop the bot/);
  oneLine(inUse.stderr);
  t.deepEqual(snapshot(w.f), running);
  // Killed without closing its store: the log is left, still refused; --force takes it along.
  await bot.kill();
  const log = await runCli(['merge'], w.env);
  t.is(log.code, 22, log.stderr);
  t.regex(log.stderr, /-wal holds \d+ bytes not yet folded into the store/);
  const forced = await runCli(['merge', '--force', '--json'], w.env);
  t.is(forced.code, 0, forced.stderr);
  t.like(JSON.parse(forced.stdout), { added: fixture.expected.keys.length });
});

test('merge killed mid-way leaves the store byte-identical; the rerun completes and sweeps the copy', async (t) => {
  const fixture = generatedFixture('many', 3000, 5);
  const { f, env } = await world(t, fixture);
  const original = readFileSync(sqlite(f));
  // Killed once the first thousand keys are in the copy (its progress line says so).
  const r = await runCli(['merge'], env, { killWhen: (stderr) => stderr.includes('merging room keys: ') });
  t.is(r.signal, 'SIGKILL', r.stderr);
  t.true(readdirSync(f.store).some((e) => /^\.sqlite-convert-\d+\.incomplete$/.test(e)), 'killed while the copy was being merged');
  t.false(readdirSync(f.store).some((e) => e.includes('.before-merge-')));
  t.deepEqual(readFileSync(sqlite(f)), original, 'the store is byte-identical');
  const rerun = await runCli(['merge', '--json'], env);
  t.is(rerun.code, 0, rerun.stderr);
  t.like(JSON.parse(rerun.stdout), { added: fixture.expected.keys.length, room_keys_after: fixture.expected.keys.length + 1 });
  t.deepEqual(readdirSync(f.store).filter((e) => e.startsWith('.')), [], 'the abandoned copy is removed');
});

test('same device ID with a new account: merge names it in one line (21); convert --force restores the old account and merges the new one\'s keys', async (t) => {
  const fixture = committedFixture('plain');
  const f = copyFixture(fixture);
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  const env = { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: f.dir };
  const newEd25519 = upgradedBotStore(f.store, fixture.expected.user_id, fixture.expected.device_id);
  const oldEd25519 = fixture.expected.identity_keys!.ed25519;
  const before = snapshot(f);
  const refused = await runCli(['merge'], env);
  t.is(refused.code, 21, refused.stderr);
  t.is(refused.stderr.trim().split('\n').length, 1, refused.stderr);
  t.true(refused.stderr.includes(`device ${fixture.expected.device_id}`) && refused.stderr.includes(newEd25519) && refused.stderr.includes(oldEd25519), refused.stderr);
  t.regex(refused.stderr, /Fix: .*run convert --force/);
  t.deepEqual(snapshot(f), before);

  const repaired = await runCli(['convert', '--force', '--json'], env);
  t.is(repaired.code, 0, repaired.stderr);
  t.like(JSON.parse(repaired.stdout), { device_id: fixture.expected.device_id, distinct_room_keys: fixture.expected.keys.length, same_device_repair: { added: 1, republishes_device_keys: true } });
  t.regex(repaired.stderr, new RegExp(`restored the old account \\(ed25519 ${oldEd25519.replace(/[+/]/g, '\\$&')}`));
});

test('two merges into one store started together (separate MIGRATION_DIRs): one refused (exit 19), the keys merged once', async (t) => {
  const fixture = generatedFixture('many', 3000, 5);
  const { f, env } = await world(t, fixture);
  const other = await fs.mkdtemp(path.join(os.tmpdir(), 'merge-'));
  t.teardown(() => fs.rm(other, { recursive: true, force: true }));
  const runs = await Promise.all([runCli(['merge', '--json'], env), runCli(['merge', '--json'], { ...env, MIGRATION_DIR: other })]);
  const refused = runs.filter((r) => r.code === 19);
  const done = runs.filter((r) => r.code === 0);
  t.is(refused.length, 1, runs.map((r) => r.stderr).join('\n'));
  t.is(done.length, 1);
  t.regex(refused[0]!.stderr, /^error: another run is using .*`merge`/m);
  t.like(JSON.parse(done[0]!.stdout), { added: fixture.expected.keys.length, already_present: 0 });
  t.is(readdirSync(f.store).filter((e) => e.startsWith('matrix-sdk-crypto.sqlite3.before-merge-')).length, 1, 'one merge replaced the store');
});
