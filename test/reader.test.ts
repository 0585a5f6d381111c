/**
 * The reader against every genuine fixture: our export equals what matrix-sdk-crypto 0.6 says it
 * wrote, damage is reported exactly, and the source store is never modified.
 */
import test from 'ava';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { committedFixture, committedFixtureNames, copyFixture, holdStoreLock, keyIdentity, treeHashes, type ExpectedKey } from './helpers/fixtures.js';

const READABLE = committedFixtureNames().filter((n) => n !== 'legacy-libolm');

async function tempDir(t: { teardown(fn: () => Promise<void>): void }, prefix = 'mig-'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

for (const name of READABLE) {
  test(`extract ${name}: the exported keys equal the genuine export, damage is named exactly`, async (t) => {
    const f = committedFixture(name);
    const mig = await tempDir(t);
    const before = treeHashes(f.store);
    const r = await runCli(['extract', '--skip-errors'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: f.expected.passphrase ?? '' });
    t.is(r.code, 0, r.stderr);
    const out = JSON.parse(await fs.readFile(path.join(mig, 'extracted-keys.json'), 'utf8')) as { version: number; total_keys: number; failed_keys: number; keys: ExpectedKey[] };
    t.deepEqual(out.keys.map(keyIdentity).sort(), f.expected.keys.map(keyIdentity).sort());
    t.is(out.total_keys, f.expected.keys.length);
    t.is(out.failed_keys, f.expected.damaged.length);
    for (const k of out.keys) {
      t.deepEqual(Object.keys(k).sort(), ['algorithm', 'forwarding_curve25519_key_chain', 'room_id', 'sender_claimed_keys', 'sender_key', 'session_id', 'session_key']);
    }
    t.true(r.stdout.includes(`${f.expected.keys.length} succeeded, ${f.expected.damaged.length} failed out of ${f.expected.keys.length + f.expected.damaged.length} total`));
    const failedPath = path.join(mig, 'failed-sessions.json');
    if (f.expected.damaged.length) {
      const failed = JSON.parse(await fs.readFile(failedPath, 'utf8')) as { failed: { key_hex: string; kind: string }[] };
      t.deepEqual(failed.failed.map((d) => d.key_hex).sort(), f.expected.damaged.map((d) => d.sled_key_hex).sort());
    } else {
      t.false(existsSync(failedPath), 'no failed-sessions.json when nothing failed');
    }
    t.is((await fs.stat(path.join(mig, 'extracted-keys.json'))).mode & 0o777, 0o600);
    t.deepEqual(treeHashes(f.store), before, 'the source store is byte-identical afterwards');
  });
}

test('damaged entries are classified by kind', async (t) => {
  const f = committedFixture('damaged');
  const mig = await tempDir(t);
  await runCli(['extract', '--skip-errors'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  const failed = JSON.parse(await fs.readFile(path.join(mig, 'failed-sessions.json'), 'utf8')) as { failed: { key_hex: string; kind: string }[] };
  const kindOf = new Map(failed.failed.map((d) => [d.key_hex, d.kind]));
  const want: Record<string, string> = {
    room_id_sigil: 'invalid_room_id',
    truncated_json: 'invalid_json',
    flipped_ciphertext_bit: 'decryption_failed',
    random_bytes: 'invalid_json',
    missing_field: 'missing_field',
    bad_pickle: 'invalid_pickle',
  };
  for (const d of f.expected.damaged) t.is(kindOf.get(d.sled_key_hex), want[d.damage], d.damage);
});

test('strict by default: the first damaged entry stops extract, names --skip-errors, leaves no file', async (t) => {
  const f = committedFixture('damaged');
  const mig = await tempDir(t);
  const r = await runCli(['extract'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 6);
  t.regex(r.stderr, /is damaged: .*--skip-errors/);
  t.is(r.stderr.trim().split('\n').length, 1, 'one line');
  t.deepEqual(await fs.readdir(mig), [], 'nothing written, not even a temp file');
});

test('wrong passphrase: one line, exit 5, no output file', async (t) => {
  const f = committedFixture('passphrase');
  const mig = await tempDir(t);
  const r = await runCli(['extract'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: 'not it' });
  t.is(r.code, 5);
  t.regex(r.stderr, /^error: the store passphrase is wrong.*STORE_PASSPHRASE/);
  t.is(r.stderr.trim().split('\n').length, 1);
  t.deepEqual(await fs.readdir(mig), []);
});

test('STORAGE_PATH defaults the store to its encrypted/ folder; --store-passphrase mirrors the variable', async (t) => {
  const f = copyFixture(committedFixture('passphrase'));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  const storage = await tempDir(t);
  await fs.rename(f.store, path.join(storage, 'encrypted'));
  const mig = await tempDir(t);
  const r = await runCli(['extract', '--store-passphrase', f.expected.passphrase!], { STORAGE_PATH: storage, MIGRATION_DIR: mig });
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.includes(`${f.expected.keys.length} succeeded`));
});

test('refusals name the cause: missing path, not a Sled store, another program\'s Sled DB, pre-0.6 store', async (t) => {
  const mig = await tempDir(t);
  const missing = await runCli(['extract'], { CRYPTO_STORE_PATH: '/nonexistent/store', MIGRATION_DIR: mig });
  t.is(missing.code, 3);
  t.regex(missing.stderr, /does not exist/);

  const empty = await tempDir(t, 'notsled-');
  const notSled = await runCli(['extract'], { CRYPTO_STORE_PATH: empty, MIGRATION_DIR: mig });
  t.is(notSled.code, 3);
  t.regex(notSled.stderr, /holds no Sled database/);

  const legacy = await runCli(['extract'], { CRYPTO_STORE_PATH: committedFixture('legacy-libolm').store, MIGRATION_DIR: mig });
  t.is(legacy.code, 3);
  t.regex(legacy.stderr, /pre-0\.6 crypto store/);

  // a Sled DB that is not a crypto store: the legacy fixture's DB minus its trees is not at hand,
  // so take the empty store and drop the crypto trees by pointing at a DB written by sled alone
  const foreign = await tempDir(t, 'foreign-');
  await fs.mkdir(path.join(foreign, 'matrix-sdk-crypto'));
  const src = committedFixture('empty').store;
  for (const file of ['conf']) await fs.copyFile(path.join(src, 'matrix-sdk-crypto', file), path.join(foreign, 'matrix-sdk-crypto', file));
  await fs.writeFile(path.join(foreign, 'matrix-sdk-crypto', 'db'), '');
  const r = await runCli(['extract'], { CRYPTO_STORE_PATH: foreign, MIGRATION_DIR: mig });
  t.is(r.code, 3, r.stderr);
  t.regex(r.stderr, /not a matrix-sdk crypto store/);
  t.deepEqual((await fs.readdir(mig)).filter((n) => !n.startsWith('.')), []);
});

test('a store held by a running bot is refused (exit 4) and left alone', async (t) => {
  const f = copyFixture(committedFixture('empty-passphrase'));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  const bot = await holdStoreLock(f.store);
  t.teardown(() => bot.release());
  const mig = await tempDir(t);
  const before = treeHashes(f.store);
  const r = await runCli(['extract'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 4);
  t.regex(r.stderr, /in use by another process.*stop the bot/);
  t.deepEqual(treeHashes(f.store), before);
});

test('a store Sled itself would refuse (a killed snapshot write left a damaged snap.*.generating): every key read, the user warned, nothing written', async (t) => {
  const f = copyFixture(committedFixture('empty-passphrase'));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  const sled = path.join(f.store, 'matrix-sdk-crypto');
  // What an open killed while writing its snapshot leaves: a newer, unfinished snapshot file.
  const snapshot = (await fs.readdir(sled)).find((n) => n.startsWith('snap.'))!;
  const bytes = await fs.readFile(path.join(sled, snapshot));
  await fs.writeFile(path.join(sled, 'snap.7FFFFFFFFFFFFFFF.generating'), bytes.subarray(0, bytes.length >> 1));
  const before = treeHashes(f.store);
  const mig = await tempDir(t);
  const r = await runCli(['extract'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /Sled itself would refuse to open this store \(the unfinished snapshot .*snap\.7FFFFFFFFFFFFFFF\.generating is damaged/);
  const out = JSON.parse(await fs.readFile(path.join(mig, 'extracted-keys.json'), 'utf8')) as { keys: ExpectedKey[] };
  t.deepEqual(out.keys.map(keyIdentity).sort(), f.expected.keys.map(keyIdentity).sort());
  t.deepEqual(treeHashes(f.store), before, 'the source store is byte-identical afterwards');
});
