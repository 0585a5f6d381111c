/**
 * The migration against a real Synapse: after `all`, matrix-rust-sdk's own crypto (wasm), given
 * only recovery-key.txt, decrypts every backed-up entry, imports it and decrypts the genuine
 * recorded events. Then the hard cases: resume after SIGKILL, a replaced version, secrets.
 */
import anyTest, { type TestFn } from 'ava';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli, type CliResult } from './helpers/cli.js';
import { committedFixture, copyFixture, generatedFixture, keyIdentity, treeHashes, type Fixture } from './helpers/fixtures.js';
import { api, freshUser, loginAsDevice, useSynapse, type WithSynapse } from './helpers/homeserver.js';
import { decryptBackup, decryptEvents, importBackedUp, newMachine, recoveryKeyToBase64, type ServerBackup } from './helpers/oracle.js';
import { backupIdentities, envFor, recoveryKeys, serverKeys, tempDir } from './helpers/migration.js';

const test = anyTest as TestFn<WithSynapse>;
useSynapse(test);




test('all: the backup holds every key, and the wasm OlmMachine restores history from recovery-key.txt alone', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('empty-passphrase');
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const before = treeHashes(f.store);
  const r = await runCli(['all'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`Keys in backup: ${f.expected.keys.length}\\n`));
  t.regex(r.stdout, new RegExp(`Keys extracted: ${f.expected.keys.length}\\n`));
  t.regex(r.stdout, /Status: COMPLETE/);

  for (const file of ['recovery-key.txt', 'backup-private-key.bin']) t.is((await fs.stat(path.join(mig, file))).mode & 0o777, 0o600, file);
  t.is((await fs.stat(mig)).mode & 0o777, 0o700);
  const keys = recoveryKeys(await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8'));
  t.regex(keys.base58, /^Es[1-9A-HJ-NP-Za-km-z]{2}( [1-9A-HJ-NP-Za-km-z]{4}){11}$/);
  t.is(recoveryKeyToBase64(keys.base58), keys.base64, 'both forms are the same key');

  const version = await api<{ version: string; count: number; auth_data: { public_key: string } }>(synapse, user.accessToken, 'GET', '/_matrix/client/v3/room_keys/version');
  t.is(version.json.count, f.expected.keys.length);
  t.is(version.json.auth_data.public_key.length, 43);
  const backup = await api<ServerBackup>(synapse, user.accessToken, 'GET', `/_matrix/client/v3/room_keys/keys?version=${version.json.version}`);

  for (const form of [recoveryKeyToBase64(keys.base58), keys.base64]) {
    const decrypted = await decryptBackup(form, backup.json);
    const restored = backupIdentities(decrypted);
    t.deepEqual(restored.sort(), f.expected.keys.map(keyIdentity).sort());
    const machine = await newMachine();
    const imported = await importBackedUp(machine, decrypted, version.json.version);
    t.is(imported.importedCount, f.expected.keys.length);
    const events = await decryptEvents(machine, f.expected.events);
    t.deepEqual(events.failures, []);
    t.is(events.ok, f.expected.events.length);
  }
  for (const [roomId, room] of Object.entries(backup.json.rooms)) {
    for (const [sessionId, entry] of Object.entries(room.sessions)) {
      const exp = f.expected.keys.find((k) => k.session_id === sessionId && k.room_id === roomId)!;
      t.is<number | undefined, number | undefined>(entry.first_message_index, exp.first_message_index);
      t.is(entry.forwarded_count, exp.imported ? 1 : 0);
      t.false(entry.is_verified);
    }
  }
  t.deepEqual(treeHashes(f.store), before, 'the source store is unchanged');

  const rerun = await runCli(['all'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(rerun.code, 0, rerun.stderr);
  t.regex(rerun.stdout, /backup version \S+ reused/);
  t.regex(rerun.stderr, /already completed/);
});

test('verify names what the backup lacks or got wrong: a deleted key, another key\'s entry, an entry our key cannot open (exit 11)', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('empty-passphrase');
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const env = envFor(f, synapse.baseUrl, user.accessToken, mig);
  t.is((await runCli(['all'], env)).code, 0);
  const sampled = await runCli(['verify', '--sample', '4'], env);
  t.is(sampled.code, 0, sampled.stdout + sampled.stderr);
  t.regex(sampled.stdout, /Keys checked: 4 \(random sample\)\n[^]*Status: COMPLETE/);
  const { version } = (await api<{ version: string }>(synapse, user.accessToken, 'GET', '/_matrix/client/v3/room_keys/version')).json;
  const backup = (await api<ServerBackup>(synapse, user.accessToken, 'GET', `/_matrix/client/v3/room_keys/keys?version=${version}`)).json;
  const [roomId, room] = Object.entries(backup.rooms).find(([, r]) => Object.keys(r.sessions).length >= 3)!;
  const [deleted, replaced, garbled] = Object.keys(room.sessions) as [string, string, string];
  const at = (sessionId: string) => `/_matrix/client/v3/room_keys/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}?version=${version}`;
  for (const sessionId of [deleted, replaced, garbled]) t.is((await api(synapse, user.accessToken, 'DELETE', at(sessionId))).status, 200);
  // The server takes any entry: one made for another session, and one no key decrypts.
  t.is((await api(synapse, user.accessToken, 'PUT', at(replaced), room.sessions[garbled])).status, 200);
  const noise = { ...room.sessions[garbled]!, session_data: { ...room.sessions[garbled]!.session_data, mac: 'AAAAAAAAAAA' } };
  t.is((await api(synapse, user.accessToken, 'PUT', at(garbled), noise)).status, 200);

  const r = await runCli(['verify'], env);
  t.is(r.code, 11, r.stdout + r.stderr);
  const esc = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  t.regex(r.stdout, new RegExp(`Keys checked: ${f.expected.keys.length} `));
  t.regex(r.stdout, new RegExp(`Missing from the backup: 1\n  ${esc(roomId)} ${esc(deleted)}\n`));
  t.regex(r.stdout, /Different from the store: 2\n/);
  t.regex(r.stdout, new RegExp(`  ${esc(roomId)} ${esc(replaced)}: differs from the store\n`));
  t.regex(r.stdout, new RegExp(`  ${esc(roomId)} ${esc(garbled)}: cannot be decrypted with our key: .+\n`));
  t.regex(r.stdout, /Status: INCOMPLETE/);
  // A sample as large as the store looks every key up on its own: the same findings.
  const all = await runCli(['verify', '--sample', String(f.expected.keys.length)], env);
  t.is(all.code, 11, all.stdout + all.stderr);
  t.regex(all.stdout, new RegExp(`Missing from the backup: 1\n  ${esc(roomId)} ${esc(deleted)}\n`));
  t.regex(all.stdout, /Different from the store: 2\n/);
  const state = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8')) as { verify: { status: string } };
  t.is(state.verify.status, 'INCOMPLETE');
  t.deepEqual((await fs.readdir(mig)).filter((n) => n.startsWith('.')), [], 'both reads of the store removed their working copies');
});

test('damaged store: --skip-errors uploads every readable key and lists the rest; strict mode stops with exit 6', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('damaged');
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const strict = await runCli(['all'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(strict.code, 6);
  t.regex(strict.stderr, /--skip-errors/);
  const r = await runCli(['all', '--skip-errors'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`Keys in backup: ${f.expected.keys.length}\\n`));
  const failed = JSON.parse(await fs.readFile(path.join(mig, 'failed-sessions.json'), 'utf8')) as { failed: { key_hex: string }[] };
  t.deepEqual(failed.failed.map((d) => d.key_hex).sort(), f.expected.damaged.map((d) => d.sled_key_hex).sort());
});

async function uploadUntilKilled(f: Fixture, env: Record<string, string>): Promise<CliResult> {
  return runCli(['upload', '--body-limit', '16384', '--in-flight', '1'], env, { killWhen: (stderr) => /uploading: 1,\d{3}/.test(stderr) });
}


test('upload --from extracted-keys.json and --from an Element export: exactly the store\'s keys; a tampered entry is caught', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('plain');
  const expected = f.expected.keys.map(keyIdentity).sort();
  const mig = await tempDir(t);
  const env = { ...envFor(f, synapse.baseUrl, '', mig), EXPORT_PASSPHRASE: 'carry me safely' };
  t.is((await runCli(['extract'], env)).code, 0);
  t.is((await runCli(['extract', '--format', 'megolm-export'], env)).code, 0);
  const extracted = path.join(mig, 'extracted-keys.json');

  for (const [file, extra] of [[extracted, {}], [path.join(mig, 'element-keys.txt'), { EXPORT_PASSPHRASE: 'carry me safely' }]] as const) {
    const user = await freshUser(synapse);
    const dir = await tempDir(t);
    const e = { ...envFor(f, synapse.baseUrl, user.accessToken, dir), ...extra };
    t.is((await runCli(['enable'], e)).code, 0);
    const r = await runCli(['upload', '--from', file], e);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`uploaded ${expected.length} keys`));
    t.deepEqual(await serverKeys(synapse, user.accessToken, await fs.readFile(path.join(dir, 'recovery-key.txt'), 'utf8')), expected, file);
  }

  const user = await freshUser(synapse);
  const dir = await tempDir(t);
  const e = envFor(f, synapse.baseUrl, user.accessToken, dir);
  t.is((await runCli(['enable'], e)).code, 0);
  const wrong = await runCli(['upload', '--from', path.join(mig, 'element-keys.txt')], { ...e, EXPORT_PASSPHRASE: 'not it' });
  t.is(wrong.code, 5, wrong.stderr);
  t.regex(wrong.stderr, /passphrase/);

  // A session ID that is not the one its session key carries would file the key where no bot finds it.
  const doc = JSON.parse(await fs.readFile(extracted, 'utf8')) as { keys: { session_id: string }[] };
  doc.keys[1]!.session_id = doc.keys[0]!.session_id;
  const tampered = path.join(dir, 'tampered.json');
  await fs.writeFile(tampered, JSON.stringify(doc));
  const strict = await runCli(['upload', '--from', tampered], e);
  t.is(strict.code, 6, strict.stderr);
  t.regex(strict.stderr, /key 1 of the file is damaged: invalid_key/);
  const skipping = await runCli(['upload', '--from', tampered, '--skip-errors'], e);
  t.is(skipping.code, 0, skipping.stderr);
  t.regex(skipping.stdout, new RegExp(`uploaded ${expected.length - 1} keys .* 1 damaged`));
  const notKeys = await runCli(['upload', '--from', path.join(dir, 'recovery-key.txt')], e);
  t.is(notKeys.code, 3, notKeys.stderr);
});

test('SIGKILL mid-upload: the rerun resumes from the recorded position and ends complete', async (t) => {
  const { synapse } = t.context;
  const f = generatedFixture('many', 3000, 5);
  const total = f.expected.keys.length; // 3000 made directly, plus the keys of the Olm exchange
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const env = envFor(f, synapse.baseUrl, user.accessToken, mig);
  t.is((await runCli(['enable'], env)).code, 0);
  const killed = await uploadUntilKilled(f, env);
  t.is(killed.signal, 'SIGKILL');
  const state = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8')) as { upload: { sessions_acknowledged: number; completed: boolean; resume_after: string } };
  t.false(state.upload.completed);
  t.true(state.upload.sessions_acknowledged > 0 && state.upload.sessions_acknowledged < total);
  const resumed = await runCli(['upload', '--body-limit', '16384'], env);
  t.is(resumed.code, 0, resumed.stderr);
  t.regex(resumed.stdout, /\(resumed\)/);
  const sent = Number(/uploaded (\d+) keys/.exec(resumed.stdout)![1]);
  t.true(sent < total, `the rerun sent ${sent} keys, fewer than all ${total}`);
  t.true(sent + state.upload.sessions_acknowledged >= total);
  const verify = await runCli(['verify'], env);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  t.regex(verify.stdout, new RegExp(`Keys in backup: ${total}\n`));
  t.regex(verify.stdout, /Status: COMPLETE/);
  const leftovers = (await fs.readdir(mig)).filter((n) => n.startsWith('.'));
  t.deepEqual(leftovers, [], 'no temporary files or working copies left behind');
});

test('the backup version replaced mid-upload: stop at once with the wrong-version message, state intact', async (t) => {
  const { synapse } = t.context;
  const f = generatedFixture('many', 3000, 5);
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const env = envFor(f, synapse.baseUrl, user.accessToken, mig);
  t.is((await runCli(['enable'], env)).code, 0);
  const ours = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8')) as { backup: { version: string } };
  let replaced = false;
  const r = await runCli(['upload', '--body-limit', '16384', '--in-flight', '1'], env, {
    killWhen: (stderr) => {
      if (!replaced && /uploading: 1,\d{3}/.test(stderr)) {
        replaced = true;
        // another client makes a new version current
        void api(synapse, user.accessToken, 'POST', '/_matrix/client/v3/room_keys/version', { algorithm: 'm.megolm_backup.v1.curve25519-aes-sha2', auth_data: { public_key: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo' } });
      }
      return false;
    },
  });
  t.true(replaced);
  t.is(r.code, 10, r.stderr);
  t.regex(r.stderr, /no longer the current one/);
  const state = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8')) as { backup: { version: string }; upload: { version: string; completed: boolean } };
  t.is(state.backup.version, ours.backup.version);
  t.is(state.upload.version, ours.backup.version);
  t.false(state.upload.completed);
});

test('an existing backup with another key: refused (exit 10) unless FORCE_NEW_BACKUP=1', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('plain');
  const user = await freshUser(synapse);
  await api(synapse, user.accessToken, 'POST', '/_matrix/client/v3/room_keys/version', { algorithm: 'm.megolm_backup.v1.curve25519-aes-sha2', auth_data: { public_key: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo' } });
  const mig = await tempDir(t);
  const env = envFor(f, synapse.baseUrl, user.accessToken, mig);
  const refused = await runCli(['enable'], env);
  t.is(refused.code, 10);
  t.regex(refused.stderr, /already has backup version .*FORCE_NEW_BACKUP=1/);
  t.deepEqual(await fs.readdir(mig), [], 'no key files for a backup that was not created');
  const forced = await runCli(['all'], { ...env, FORCE_NEW_BACKUP: '1' });
  t.is(forced.code, 0, forced.stderr);
  t.regex(forced.stdout, /Status: COMPLETE/);
});

/** Every file under `dir` but the store copies inside backups (the store itself, 0700) and the named ones. */
async function filesUnder(dir: string, except: string[]): Promise<{ name: string; text: string }[]> {
  const out: { name: string; text: string }[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'crypto-store-sled') out.push(...(await filesUnder(p, except)));
    } else if (!except.includes(entry.name)) out.push({ name: p, text: (await fs.readFile(p)).toString('latin1') });
  }
  return out;
}

test('secrets never reach stdout, stderr, process titles or any file but the 0600 key files', async (t) => {
  const { synapse } = t.context;
  const f = copyFixture(committedFixture('plain'));
  t.teardown(() => fs.rm(f.dir, { recursive: true, force: true }));
  const user = await freshUser(synapse);
  // the bot's old device, as bot-sdk.json names it, so that delete-device has something to delete
  t.is(await loginAsDevice(synapse, user, f.expected.device_id), f.expected.device_id);
  const mig = await tempDir(t);
  const exportPassphrase = 'a passphrase nobody may see';
  const env = { ...envFor(f, synapse.baseUrl, user.accessToken, mig), EXPORT_PASSPHRASE: exportPassphrase, MIGRATION_PASSWORD: user.password, MIGRATION_CONFIRM: f.expected.device_id };

  // Process titles of everything running meanwhile (ours and anything we might spawn).
  const titles: string[] = [];
  const sampler = setInterval(() => titles.push(spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout), 30);
  const runs: CliResult[] = [];
  for (const args of [['backup'], ['all', '--verbose'], ['verify', '--verbose'], ['upload', '--restart', '--verbose'], ['extract', '--format', 'megolm-export', '--verbose'], ['delete-device', '--verbose']]) {
    runs.push(await runCli(args, env));
    t.is(runs[runs.length - 1]!.code, 0, `${args[0]}: ${runs[runs.length - 1]!.stderr}`);
  }
  clearInterval(sampler);
  t.true(titles.length > 0);

  const keys = recoveryKeys(await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8'));
  const privateKey = await fs.readFile(path.join(mig, 'backup-private-key.bin'));
  const secrets = [
    keys.base58,
    keys.base58.replace(/ /g, ''),
    keys.base64,
    privateKey.toString('hex'),
    privateKey.toString('base64').replace(/=+$/, ''),
    user.accessToken,
    user.password,
    exportPassphrase,
    ...f.expected.keys.map((k) => k.session_key.replace(/=+$/, '')),
  ];
  const files = await filesUnder(mig, ['recovery-key.txt', 'backup-private-key.bin']);
  t.true(files.some((x) => x.name.endsWith('metadata.json')) && files.some((x) => x.name.endsWith('element-keys.txt')) && files.some((x) => x.name.endsWith('migration-state.json')));
  const outputs = [...runs.flatMap((r) => [r.stdout, r.stderr]), ...titles, ...files.map((x) => x.text)];
  for (const secret of secrets) {
    for (const text of outputs) t.false(text.includes(secret), `a secret (${secret.slice(0, 6)}…) leaked`);
  }
  for (const file of ['recovery-key.txt', 'backup-private-key.bin', 'element-keys.txt']) t.is((await fs.stat(path.join(mig, file))).mode & 0o777, 0o600, file);
});
