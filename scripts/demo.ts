/**
 * npm run demo: the whole migration of the bundled sample store (a genuine matrix-bot-sdk 0.6.6+
 * store, test/fixtures/empty-passphrase) against a throwaway local Synapse, ending with the proof:
 * matrix-rust-sdk's own crypto, given only recovery-key.txt, restores the keys and decrypts the
 * bot's recorded encrypted messages. Then the other path on the same store: `convert`, the Sled store
 * straight into the SQLite store the upgraded bot opens (its proof, a matrix-sdk-crypto 0.9
 * OlmMachine over that store, is `cargo test -p sqlite-convert`).
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalSynapse } from '../src/devtools/local-synapse.js';
import { committedFixture } from '../test/helpers/fixtures.js';
import { CLI } from '../test/helpers/paths.js';
import { decryptBackup, decryptEvents, importBackedUp, newMachine, recoveryKeyToBase64, type ServerBackup } from '../test/helpers/oracle.js';

const say = (line: string) => process.stdout.write(`\x1b[1m${line}\x1b[0m\n`);

async function main(): Promise<number> {
  const sample = committedFixture('empty-passphrase');
  const work = mkdtempSync(path.join(os.tmpdir(), 'sled-migration-demo-'));
  const storage = path.join(work, 'bot-storage');
  const migrationDir = path.join(work, 'migration');
  cpSync(sample.store, path.join(storage, 'encrypted'), { recursive: true });
  say(`1. A bot's storage with its old Sled crypto store: ${storage}/encrypted (${sample.expected.keys.length} room keys, passphrase "")`);

  say('2. A throwaway homeserver: Synapse on loopback with a fresh SQLite database');
  // Named as the sample bot's server, so that its user @bot:example.org has an account there.
  const synapse = await LocalSynapse.start({ serverName: 'example.org' });
  try {
    const bot = await synapse.registerUser('bot');
    say(`   ${synapse.baseUrl}, user ${bot.userId}`);

    say('3. sled-migration-tool all   (enable → upload → verify)');
    const env = { ...process.env, STORAGE_PATH: storage, MIGRATION_DIR: migrationDir, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: bot.accessToken };
    const t0 = Date.now();
    const code = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, [CLI, 'all'], { env, stdio: ['ignore', 'inherit', 'inherit'] });
      child.on('close', (c) => resolve(c ?? 1));
    });
    if (code !== 0) {
      say(`   the migration failed (exit ${code})`);
      return code;
    }
    say(`   done in ${((Date.now() - t0) / 1000).toFixed(1)} s; MIGRATION_DIR holds recovery-key.txt (0600), backup-private-key.bin, backup-public-key.txt, migration-state.json`);

    say('4. The proof: the upgraded bot\'s crypto (matrix-rust-sdk, as wasm) restores from recovery-key.txt alone');
    const recovery = /^recovery_key: (.+)$/m.exec(readFileSync(path.join(migrationDir, 'recovery-key.txt'), 'utf8'))![1]!;
    const headers = { authorization: `Bearer ${bot.accessToken}` };
    const { version } = (await (await fetch(`${synapse.baseUrl}/_matrix/client/v3/room_keys/version`, { headers })).json()) as { version: string };
    const backup = (await (await fetch(`${synapse.baseUrl}/_matrix/client/v3/room_keys/keys?version=${version}`, { headers })).json()) as ServerBackup;
    const decrypted = await decryptBackup(recoveryKeyToBase64(recovery), backup);
    const machine = await newMachine(bot.userId, 'UPGRADEDBOT');
    const imported = await importBackedUp(machine, decrypted, version);
    const events = await decryptEvents(machine, sample.expected.events);
    say(`   imported ${imported.importedCount} of ${imported.totalCount} backed-up room keys`);
    say(`   decrypted ${events.ok} of ${sample.expected.events.length} recorded encrypted messages, e.g. "${(sample.expected.events[0]!.plaintext as { body: string }).body}"`);
    const ok = events.ok === sample.expected.events.length && imported.importedCount === sample.expected.keys.length;
    say(ok ? 'The bot can read its encrypted history again.' : 'PROOF FAILED');
    if (!ok) return 1;

    say('5. The other path, keeping the device: sled-migration-tool convert   (Sled → matrix-sdk-crypto.sqlite3, nothing on the server)');
    // The kept device needs a token of its own: a password login with its device_id; convert asks
    // the homeserver whose token it is before writing.
    const kept = await synapse.login(bot, sample.expected.device_id);
    const converted = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, [CLI, 'convert'], { env: { ...env, ACCESS_TOKEN: kept.accessToken }, stdio: ['ignore', 'inherit', 'inherit'] });
      child.on('close', (c) => resolve(c ?? 1));
    });
    say(converted === 0 ? '   the upgraded bot opens it as the same device with every key (proven by cargo test -p sqlite-convert: a 0.9 OlmMachine decrypts the recorded messages and Olm to-device messages)' : `   convert failed (exit ${converted})`);
    return converted;
  } finally {
    await synapse.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
