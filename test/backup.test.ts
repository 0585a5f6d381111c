/**
 * backup and restore on genuine stores: a copy `sha256sum -c` accepts, a rollback that gives back
 * the original bytes, and refusals where going on could make things worse.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { committedFixture, copyFixture, holdStoreLock, treeHashes } from './helpers/fixtures.js';
import { CLI } from './helpers/paths.js';

async function tempDir(t: { teardown(fn: () => Promise<void>): void }, prefix = 'backup-'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

function storeCopy(t: { teardown(fn: () => Promise<void>): void }) {
  const f = copyFixture(committedFixture('empty-passphrase'));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  return f;
}

function backups(mig: string): string[] {
  return readdirSync(mig).filter((n) => n.startsWith('migration-backup-'));
}

test('backup: sha256sum -c accepts the list, metadata describes the store, modes are private', async (t) => {
  const f = storeCopy(t);
  const mig = await tempDir(t);
  const before = treeHashes(f.store);
  const r = await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 0, r.stderr);
  const [name] = backups(mig);
  t.regex(name!, /^migration-backup-\d{8}-\d{6}$/);
  const dir = path.join(mig, name!);
  const check = spawnSync('sha256sum', ['-c', 'checksums.sha256'], { cwd: dir, encoding: 'utf8' });
  t.is(check.status, 0, check.stdout + check.stderr);
  t.regex(check.stdout, /crypto-store-sled\/matrix-sdk-crypto\/db: OK/);
  t.regex(check.stdout, /crypto-store-sled\/bot-sdk.json: OK/);
  const meta = JSON.parse(await fs.readFile(path.join(dir, 'metadata.json'), 'utf8'));
  t.like(meta, { complete: true, source: f.store, store_version: f.expected.store_version, store_cipher: 'present' });
  t.is(meta.files, check.stdout.trim().split('\n').length);
  t.true(meta.bytes > 0 && meta.duration_s >= 0);
  t.is((await fs.stat(dir)).mode & 0o777, 0o700);
  t.deepEqual(treeHashes(path.join(dir, 'crypto-store-sled')), before, 'the copy is byte-identical');
  t.deepEqual(treeHashes(f.store), before, 'the source is unchanged');
  const verify = await runCli(['backup', '--verify'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(verify.code, 0, verify.stderr);
  t.regex(verify.stdout, /every checksum matches/);
});

test('restore after damage gives back the original bytes and keeps the damaged store aside', async (t) => {
  const f = storeCopy(t);
  const mig = await tempDir(t);
  const original = treeHashes(f.store);
  t.is((await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig })).code, 0);
  const db = path.join(f.store, 'matrix-sdk-crypto', 'db');
  const bytes = await fs.readFile(db);
  bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
  await fs.writeFile(db, bytes);
  await fs.rm(path.join(f.store, 'bot-sdk.json'));
  const damaged = treeHashes(f.store);

  const dry = await runCli(['restore', '--dry-run'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /would move the current store/);
  t.deepEqual(treeHashes(f.store), damaged, 'a dry run changes nothing');

  const r = await runCli(['restore'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(treeHashes(f.store), original, 'the store is byte-identical to the original');
  const aside = /kept at (\S+)/.exec(r.stdout)![1]!;
  t.deepEqual(treeHashes(aside), damaged, 'the replaced store was renamed, not deleted');
});

test('a flipped byte in the backup: restore refuses naming the file, and changes nothing', async (t) => {
  const f = storeCopy(t);
  const mig = await tempDir(t);
  t.is((await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig })).code, 0);
  const copy = path.join(mig, backups(mig)[0]!, 'crypto-store-sled', 'matrix-sdk-crypto', 'db');
  const bytes = await fs.readFile(copy);
  bytes[100]! ^= 1;
  await fs.writeFile(copy, bytes);
  const before = treeHashes(path.dirname(f.store));
  const r = await runCli(['restore'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 14, r.stderr);
  t.regex(r.stderr, /crypto-store-sled\/matrix-sdk-crypto\/db \(differs\)/);
  t.deepEqual(treeHashes(path.dirname(f.store)), before);
  const verify = await runCli(['backup', '--verify'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(verify.code, 14);
});

test('a store held by the running bot: backup and restore refuse; FORCE_BACKUP=1 copies anyway', async (t) => {
  const f = storeCopy(t);
  const mig = await tempDir(t);
  t.is((await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig })).code, 0);
  const bot = await holdStoreLock(f.store);
  t.teardown(() => bot.release());
  const refused = await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(refused.code, 4);
  t.regex(refused.stderr, /in use.*FORCE_BACKUP=1/);
  t.is(backups(mig).length, 1, 'nothing new was written');
  const restore = await runCli(['restore'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(restore.code, 4, restore.stderr);
  t.false(readdirSync(path.dirname(f.store)).some((n) => n.includes('before-restore') || n.includes('restoring')));
  await new Promise((r) => setTimeout(r, 1100)); // a new second, a new name
  const forced = await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, FORCE_BACKUP: '1' });
  t.is(forced.code, 0, forced.stderr);
  t.regex(forced.stderr, /in use/);
  t.is(backups(mig).length, 2);
});

test('a backup killed mid-copy stays marked incomplete and restore never takes it', async (t) => {
  const work = await tempDir(t, 'backup-kill-');
  const f = storeCopy(t);
  // A store big enough that the copy is still running when we look: a large blob beside the db.
  const blob = path.join(f.store, 'matrix-sdk-crypto', 'blobs', 'big');
  await fs.mkdir(path.dirname(blob), { recursive: true });
  const chunk = Buffer.alloc(64 << 20, 7);
  const handle = await fs.open(blob, 'w');
  for (let i = 0; i < 16; i++) await handle.write(chunk);
  await handle.close();
  const mig = path.join(work, 'mig');
  const child = spawn(process.execPath, [CLI, 'backup'], { env: { ...process.env, CI: 'true', CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig }, stdio: 'ignore' });
  let killedMidCopy = false;
  for (let i = 0; i < 2000 && child.exitCode === null; i++) {
    const staging = existsSync(mig) ? readdirSync(mig).find((n) => n.endsWith('.incomplete')) : undefined;
    const partial = staging && path.join(mig, staging, 'crypto-store-sled', 'matrix-sdk-crypto', 'blobs', 'big');
    if (partial && existsSync(partial) && (await fs.stat(partial)).size > 0) {
      child.kill('SIGKILL');
      killedMidCopy = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => child.once('close', r));
  t.true(killedMidCopy, 'the kill landed while the copy was running');
  t.deepEqual(backups(mig).filter((n) => !n.endsWith('.incomplete')), [], 'nothing looks complete');
  t.is(backups(mig).filter((n) => n.endsWith('.incomplete')).length, 1);
  const r = await runCli(['restore'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 14);
  t.regex(r.stderr, /no complete backup/);
  const staging = path.join(mig, backups(mig)[0]!);
  const named = await runCli(['restore', '--from', staging], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(named.code, 14);
  t.regex(named.stderr, /interrupted backup/);
  const again = await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(again.code, 0, again.stderr);
});

test('backup refuses a folder that holds no store, writing nothing', async (t) => {
  const mig = await tempDir(t);
  const missing = await runCli(['backup'], { CRYPTO_STORE_PATH: path.join(mig, 'nope'), MIGRATION_DIR: mig });
  t.is(missing.code, 3);
  t.regex(missing.stderr, /no Sled store/);
  t.deepEqual(backups(mig), []);
});
