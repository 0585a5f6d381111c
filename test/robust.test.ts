/**
 * When the world is messier than one run against Synapse (issue 23): two runs on one folder at
 * once, a run killed while it held the folder, Dendrite's answers to an upload into a deleted
 * backup, a device ID that does not exist, and `--json` results a Job's log can be read by.
 * Serial: the refusals and "within seconds" are about time, and the machine is shared.
 */
import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, type CliResult } from './helpers/cli.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { committedFixture, copyFixture, generatedFixture, keyIdentity, type Fixture } from './helpers/fixtures.js';
import { api, freshUser, loginAsDevice, useSynapse, type WithSynapse } from './helpers/homeserver.js';
import { envFor, recoveryKeys, serverKeys, tempDir } from './helpers/migration.js';

const test = anyTest as TestFn<WithSynapse>;
useSynapse(test);

const LOCK = '.sled-migration-tool.lock';

/** The one JSON object a `--json` run prints on stdout. */
function jsonResult(r: CliResult): Record<string, any> {
  const lines = r.stdout.split('\n').filter(Boolean);
  if (lines.length !== 1) throw new Error(`expected one line on stdout, got ${lines.length}: ${r.stdout}\n${r.stderr}`);
  return JSON.parse(lines[0]!) as Record<string, any>;
}

/** Room keys written by a `convert --json` run. */
const roomKeysConverted = (j: Record<string, any>) => (j.trees as { tree: string; converted: number }[]).find((t) => t.tree === 'inbound_group_sessions')?.converted;

/** Resolves once `file` exists (the first run holds its lock), or fails after `ms`. */
async function appears(file: string, ms = 60_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (existsSync(file)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${file} did not appear`);
}

/** A fresh user and MIGRATION_DIR for `f`, the CLI talking to `baseUrl` (Synapse itself unless a proxy is given). */
async function world(t: ExecutionContext<WithSynapse>, f: Fixture, baseUrl?: string) {
  const { synapse } = t.context;
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  return { synapse, user, mig, env: envFor(f, baseUrl ?? synapse.baseUrl, user.accessToken, mig) };
}

type TimedRun = CliResult & { ms: number; json: Record<string, any> };

/** A `--json` run, with how long it took. */
async function timedRun(args: string[], env: Record<string, string | undefined>): Promise<TimedRun> {
  const start = Date.now();
  const r = await runCli([...args, '--json'], env);
  return { ...r, ms: Date.now() - start, json: jsonResult(r) };
}

/** Runs `args` twice, the second once the first holds its lock (`lockFile` exists). */
async function twoRuns(args: string[], env: Record<string, string>, lockFile: string): Promise<{ first: TimedRun; second: TimedRun }> {
  const first = timedRun(args, env);
  await appears(lockFile);
  const second = await timedRun(args, env);
  return { first: await first, second };
}

/** Two runs started at the same moment (a retried Job's pod beside the first one): the one that ran, and the other. */
async function together(args: string[], env: Record<string, string>, otherEnv = env): Promise<{ done: TimedRun; refused: TimedRun }> {
  const runs = await Promise.all([timedRun(args, env), timedRun(args, otherEnv)]);
  const done = runs.find((r) => r.code !== 19) ?? runs[0]!;
  return { done, refused: runs.find((r) => r !== done)! };
}

function assertRefused(t: ExecutionContext<unknown>, refused: TimedRun, command: string) {
  t.is(refused.code, 19, refused.stderr);
  t.regex(refused.stderr, new RegExp(`^error: another run is using .*: \`${command}\` \\(pid \\d+ on .+, since \\d{4}-.*\\)\\. Fix: wait for it to finish`, 'm'));
  t.is(refused.stderr.trim().split('\n').length, 1, 'one line');
  t.is(refused.json.error.code, 'RUN_LOCKED');
  t.is(refused.json.exit_code, 19);
  t.true(refused.ms < 5000, `refused at once (${refused.ms} ms), not after waiting`);
  t.log(`${command}: the second run refused after ${refused.ms} ms (process start included)`);
}

test.serial('two uploads into one MIGRATION_DIR: the second is refused at once (exit 19) naming the first, which completes; nothing lost', async (t) => {
  const f = generatedFixture('many', 3000, 5);
  const { synapse, user, mig, env } = await world(t, f);
  t.is((await runCli(['enable'], env)).code, 0);
  const { first, second } = await twoRuns(['upload', '--body-limit', '32768'], env, path.join(mig, LOCK));
  assertRefused(t, second, 'upload');
  t.is(first.code, 0, first.stderr);
  t.is(first.json.upload.sent, f.expected.keys.length);
  t.false(existsSync(path.join(mig, LOCK)), 'the lock file is gone after a clean run');
  const verify = await runCli(['verify'], env);
  t.is(verify.code, 0, verify.stderr);
  t.regex(verify.stdout, /Status: COMPLETE/);
});

test.serial('two `all --force-new-backup` started together (the issue\'s race): one refused (exit 19), the other COMPLETE with the key in recovery-key.txt', async (t) => {
  const f = generatedFixture('many', 3000, 5);
  const { synapse, user, mig, env } = await world(t, f);
  const { done, refused } = await together(['all', '--force-new-backup', '--body-limit', '32768'], env);
  assertRefused(t, refused, 'all');
  t.is(done.code, 0, done.stderr);
  t.is(done.json.verify.status, 'COMPLETE');
  t.is(done.json.verify.keys_in_backup, f.expected.keys.length);
  const current = await api<{ version: string }>(synapse, user.accessToken, 'GET', '/_matrix/client/v3/room_keys/version');
  t.is(current.json.version, done.json.backup_version, 'one backup version, the one recorded');
  t.deepEqual(await serverKeys(synapse, user.accessToken, await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8')), f.expected.keys.map(keyIdentity).sort());
});

test.serial('two converts of one crypto folder started together (separate MIGRATION_DIRs): one refused (exit 19), the store converted once', async (t) => {
  const f = copyFixture(generatedFixture('many', 3000, 5));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  const [migA, migB] = [await tempDir(t), await tempDir(t)];
  const env = (mig: string) => ({ CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: f.expected.passphrase ?? '' });
  const { done, refused } = await together(['convert'], env(migA), env(migB));
  assertRefused(t, refused, 'convert');
  t.regex(refused.stderr, new RegExp(`another run is using ${f.store.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:`), 'names the crypto folder');
  t.is(done.code, 0, done.stderr);
  t.is(roomKeysConverted(done.json), f.expected.keys.length);
  t.is(done.json.written, path.join(f.store, 'matrix-sdk-crypto.sqlite3'));
  t.false(existsSync(path.join(f.store, LOCK)));
  t.deepEqual((await fs.readdir(f.store)).sort(), ['bot-sdk.json', 'matrix-sdk-crypto', 'matrix-sdk-crypto.sqlite3']);
});

test.serial('a usage error is found before any lock: nothing created, no lock file', async (t) => {
  const mig = path.join(await tempDir(t), 'not-yet');
  const r = await runCli(['upload'], { CRYPTO_STORE_PATH: committedFixture('plain').store, MIGRATION_DIR: mig, HOMESERVER_URL: undefined, ACCESS_TOKEN: 'x' });
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /HOMESERVER_URL is not set/);
  t.false(existsSync(mig), 'MIGRATION_DIR not created');
});

test.serial('a SIGKILLed run\'s lock is taken over (said on stderr), as is one naming a live pid (a restarted pod is pid 1 again)', async (t) => {
  const f = generatedFixture('many', 3000, 5);
  const { synapse, user, mig, env } = await world(t, f);
  const killed = await runCli(['all', '--body-limit', '32768'], env, { killWhen: (stderr) => /step 2\/3: upload/.test(stderr) });
  t.is(killed.signal, 'SIGKILL');
  const left = JSON.parse(readFileSync(path.join(mig, LOCK), 'utf8')) as { pid: number; command: string };
  t.is(left.command, 'all', 'the dead run\'s lock file is still there');
  const rerun = await runCli(['all'], env);
  t.is(rerun.code, 0, rerun.stderr);
  t.regex(rerun.stderr, new RegExp(`warning: took over the lock on .* left by \`all\` \\(pid ${left.pid} on .*\\), which is no longer running`));
  t.regex(rerun.stdout, /Status: COMPLETE/);
  t.false(existsSync(path.join(mig, LOCK)));

  // A pid-file lock would take this for a live run: the pid is alive (it is this test's own).
  await fs.writeFile(path.join(mig, LOCK), JSON.stringify({ pid: process.pid, host: 'old-pod', command: 'all', since: '2026-01-01T00:00:00.000Z' }));
  const again = await runCli(['verify'], env);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, new RegExp(`took over the lock on .* left by \`all\` \\(pid ${process.pid} on old-pod`));
});

test.serial('Dendrite\'s 500 to an upload into a deleted backup version: exit 10 with the wrong-version message within seconds, not after the 64-80 s retry budget', async (t) => {
  const f = generatedFixture('many', 3000, 5);
  // Every upload delayed 0.3-1.5 s, so the run is still uploading when the version is deleted;
  // uploads into a version Synapse no longer knows are answered as Dendrite answers them.
  const proxy = await startFaultProxy(t.context.synapse.baseUrl, { rate: 1, faults: ['delay'], path: '/room_keys/keys', dendrite: true });
  t.teardown(() => proxy.stop());
  const { synapse, user, mig, env } = await world(t, f, proxy.url);
  t.is((await runCli(['enable'], env)).code, 0);
  const version = (JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8')) as { backup: { version: string } }).backup.version;
  let deletedAt = 0;
  const run = runCli(['upload', '--body-limit', '32768', '--json'], env);
  // Deleted as soon as the first upload request reaches the proxy (which holds it 0.3-1.5 s).
  const poll = setInterval(() => {
    if (!deletedAt && (proxy.stats().delay ?? 0) >= 1) {
      deletedAt = Date.now();
      void api(synapse, user.accessToken, 'DELETE', `/_matrix/client/v3/room_keys/version/${version}`);
    }
  }, 10);
  const r = await run;
  clearInterval(poll);
  const elapsed = Date.now() - deletedAt;
  t.true(deletedAt > 0, 'the version was deleted mid-upload');
  t.true((proxy.stats()['dendrite-500'] ?? 0) >= 1, `Dendrite's answer was given: ${JSON.stringify(proxy.stats())}`);
  t.is(r.code, 10, r.stderr);
  t.regex(r.stderr, new RegExp(`error: backup version ${version} is no longer the current one \\(the server has no backup any more\\).*Fix: .*run \`enable\` again`));
  t.notRegex(r.stderr, /retrying in [2-9]|check the homeserver's health/, 'no backoff beyond the first retry');
  t.true(elapsed < 8000, `stopped ${elapsed} ms after the deletion`);
  t.log(`stopped ${elapsed} ms after the deletion; proxy: ${JSON.stringify(proxy.stats())}`);
  t.is(jsonResult(r).error.code, 'WRONG_BACKUP_VERSION');
  const state = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8')) as { upload?: { completed: boolean } };
  t.not(state.upload?.completed, true, 'not recorded as complete');
});

test.serial('delete-device of a device the user does not have: refused (exit 13) in one line naming the user\'s devices, before any password, nothing deleted', async (t) => {
  const { synapse, user, env } = await world(t, committedFixture('plain'));
  const devices = async () => (await api<{ devices: { device_id: string }[] }>(synapse, user.accessToken, 'GET', '/_matrix/client/v3/devices')).json.devices.map((d) => d.device_id).sort();
  const before = await devices();
  const me = await api<{ device_id: string }>(synapse, user.accessToken, 'GET', '/_matrix/client/v3/account/whoami');
  const r = await runCli(['delete-device', '--json'], { ...env, OLD_DEVICE_ID: 'NOSUCHDEV' });
  t.is(r.code, 13, r.stderr);
  t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`^error: ${user.userId} has no device NOSUCHDEV \\(its devices: .*${me.json.device_id} \\(this access token\\).*\\); nothing was deleted\\. Fix: set OLD_DEVICE_ID`));
  t.is(jsonResult(r).error.code, 'DEVICE');
  t.deepEqual(await devices(), before);
});

test.serial('--json on every command: stdout is exactly one JSON object with the result fields and no secret; the human lines go to stderr', async (t) => {
  const f = copyFixture(committedFixture('plain'));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  const { synapse, user, mig, env: base } = await world(t, f);
  t.is(await loginAsDevice(synapse, user, f.expected.device_id), f.expected.device_id);
  const env = { ...base, MIGRATION_PASSWORD: user.password, MIGRATION_CONFIRM: f.expected.device_id };
  const keys = f.expected.keys.length;
  const expectations: [string[], (j: Record<string, any>) => void, RegExp][] = [
    [['backup'], (j) => (t.regex(j.backup_dir, /migration-backup-\d{8}-\d{6}$/), t.true(j.files > 0 && j.bytes > 0)), /backup complete/],
    [['backup', '--verify'], (j) => t.true(j.verified), /backup verified/],
    [['restore', '--dry-run'], (j) => (t.true(j.dry_run), t.is(j.target, f.store)), /nothing was changed/],
    [['extract'], (j) => (t.is(j.succeeded, keys), t.is(j.failed, 0), t.is(j.output, path.join(mig, 'extracted-keys.json'))), /succeeded/],
    [['enable'], (j) => (t.true(j.created), t.truthy(j.backup_version), t.is(j.recovery_key_file, path.join(mig, 'recovery-key.txt'))), /backup version \S+ created/],
    [['upload'], (j) => (t.is(j.upload.sent, keys), t.is(j.upload.rooms, new Set(f.expected.keys.map((k) => k.room_id)).size)), /uploaded \d+ keys/],
    [['verify'], (j) => (t.is(j.verify.status, 'COMPLETE'), t.is(j.verify.keys_in_backup, keys), t.is(j.verify.checked, keys)), /Status: COMPLETE/],
    [['all'], (j) => (t.false(j.created), t.true(j.upload.already_complete), t.is(j.verify.status, 'COMPLETE')), /Status: COMPLETE/],
    [['convert'], (j) => (t.is(j.device_id, f.expected.device_id), t.is(roomKeysConverted(j), keys), t.is(j.identity_keys.ed25519, f.expected.identity_keys!.ed25519)), /wrote .*sqlite3/],
    [['delete-device'], (j) => (t.true(j.deleted), t.is(j.device_id, f.expected.device_id)), /deleted device/],
  ];
  const printed: string[] = [];
  for (const [args, check, human] of expectations) {
    // convert checks a token it is given against the store's device: this one is another device's.
    const r = await runCli([...args, '--json'], args[0] === 'convert' ? { ...env, HOMESERVER_URL: undefined, ACCESS_TOKEN: undefined } : env);
    t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    const j = jsonResult(r);
    t.like(j, { command: args[0], status: 'ok', exit_code: 0 }, args.join(' '));
    t.regex(j.meaning, /^OK: /);
    check(j);
    t.regex(r.stderr, human, `${args.join(' ')}: the human result line on stderr`);
    printed.push(r.stdout);
  }
  const typo = await runCli(['upload', '--bogus', '--json'], env);
  t.is(typo.code, 2);
  t.like(jsonResult(typo), { command: 'upload', status: 'error', exit_code: 2, error: { code: 'USAGE' } }, 'a mistyped command line too');
  const recovery = recoveryKeys(await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8'));
  const secrets = [recovery.base58, recovery.base64, user.accessToken, user.password, ...f.expected.keys.map((k) => k.session_key.replace(/=+$/, ''))];
  for (const secret of secrets) t.false(printed.some((p) => p.includes(secret)), `a secret (${secret.slice(0, 6)}…) in a JSON result`);
});
