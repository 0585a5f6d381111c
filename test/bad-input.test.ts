/**
 * Bad local input the fixtures do not cover: an invalid bot-sdk.json, a MIGRATION_DIR that is full
 * or read-only (small filesystems this test mounts). Each: one line naming cause and fix, the
 * documented exit code, nothing half-written.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { committedFixture, copyFixture, generatedFixture, treeHashes } from './helpers/fixtures.js';

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bad-input-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A tmpfs of `size`, or undefined where this process may not mount (the tests then say so). */
async function smallFilesystem(t: { teardown(fn: () => Promise<void>): void }, size: string, readOnly = false): Promise<string | undefined> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'small-fs-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}${readOnly ? ',ro' : ''}`, 'tmpfs', dir]);
  if (r.status !== 0) return undefined;
  t.teardown(async () => {
    spawnSync('umount', [dir]);
    await fs.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

const canMount = (() => {
  const dir = path.join(os.tmpdir(), `mount-probe-${process.pid}`);
  spawnSync('mkdir', ['-p', dir]);
  const ok = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]).status === 0;
  if (ok) spawnSync('umount', [dir]);
  spawnSync('rmdir', [dir]);
  return ok;
})();
const mountTest = canMount ? test : test.skip; // mounting needs root (CI runs as root)

test('an invalid bot-sdk.json: exit 3 naming the file and the fix', async (t) => {
  const f = copyFixture(committedFixture('plain'));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  await fs.writeFile(path.join(f.store, 'bot-sdk.json'), '{"deviceId": ');
  const mig = await tempDir(t);
  const r = await runCli(['extract'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 3, r.stderr);
  t.regex(r.stderr, /bot-sdk\.json.*Fix: fix bot-sdk\.json or pass the device ID with OLD_DEVICE_ID/);
  t.deepEqual(readdirSync(mig).filter((n) => !n.startsWith('.')), []);
});

mountTest('MIGRATION_DIR full: extract stops with exit 7 and leaves no partial file; backup refuses before copying', async (t) => {
  const f = generatedFixture('many', 3000, 5); // extracted-keys.json is about 2 MB
  const full = (await smallFilesystem(t, '512k'))!;
  // --work-dir (0.1's working copy) is still accepted, and nothing goes there any more.
  const work = await tempDir(t);
  const r = await runCli(['extract', '--work-dir', work], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: full });
  t.is(r.code, 7, r.stderr);
  t.regex(r.stderr, /is full \(ENOSPC\)\. Fix: free space there or set MIGRATION_DIR/);
  t.deepEqual(readdirSync(full), [], 'no extracted-keys.json, no temporary file');
  t.deepEqual(readdirSync(work), [], 'the store is read in place: no copy of it anywhere');

  const before = treeHashes(f.store);
  const backup = await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: full });
  t.is(backup.code, 7, backup.stderr);
  t.regex(backup.stderr, /free; the backup needs/);
  t.deepEqual(readdirSync(full), []);
  t.deepEqual(treeHashes(f.store), before);
});

mountTest('a read-only MIGRATION_DIR: exit 7 naming it, for extract and backup', async (t) => {
  const f = committedFixture('plain');
  const ro = (await smallFilesystem(t, '1m', true))!;
  for (const args of [['extract'], ['backup']]) {
    const r = await runCli(args, { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: ro });
    t.is(r.code, 7, `${args[0]}: ${r.stderr}`);
    t.regex(r.stderr, /not writable \(EROFS\)/);
  }
});
