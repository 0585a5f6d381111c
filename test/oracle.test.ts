/**
 * The proof a bot can read its history, without a homeserver: keys from our extract file, imported
 * into matrix-rust-sdk's own OlmMachine (wasm), decrypt the genuine recorded Megolm events.
 */
import test from 'ava';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { committedFixture } from './helpers/fixtures.js';
import { decryptEvents, newMachine } from './helpers/oracle.js';

for (const name of ['plain', 'empty-passphrase', 'mixed-upgrade', 'msgpack-cipher', 'damaged']) {
  test(`${name}: our extracted keys decrypt every recorded event in the wasm OlmMachine`, async (t) => {
    const f = committedFixture(name);
    const mig = await fs.mkdtemp(path.join(os.tmpdir(), 'oracle-'));
    t.teardown(() => fs.rm(mig, { recursive: true, force: true }));
    const r = await runCli(['extract', '--skip-errors'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: f.expected.passphrase ?? '' });
    t.is(r.code, 0, r.stderr);
    const { keys } = JSON.parse(await fs.readFile(path.join(mig, 'extracted-keys.json'), 'utf8')) as { keys: unknown[] };
    const machine = await newMachine();
    const before = await decryptEvents(machine, f.expected.events);
    t.is(before.ok, 0, 'a fresh machine cannot decrypt anything');
    const result = await machine.importExportedRoomKeys(JSON.stringify(keys), () => undefined);
    t.is(result.importedCount, f.expected.keys.length);
    const after = await decryptEvents(machine, f.expected.events);
    t.true(f.expected.events.length > 0);
    t.deepEqual(after.failures, []);
    t.is(after.ok, f.expected.events.length);
  });
}

test('extract --format megolm-export writes a file OlmMachine.decryptExportedRoomKeys reads', async (t) => {
  const f = committedFixture('empty-passphrase');
  const mig = await fs.mkdtemp(path.join(os.tmpdir(), 'export-'));
  t.teardown(() => fs.rm(mig, { recursive: true, force: true }));
  const passFile = path.join(mig, 'pass.txt');
  await fs.writeFile(passFile, 'export passphrase\n');
  const r = await runCli(['extract', '--format', 'megolm-export', '--export-passphrase-file', passFile], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig });
  t.is(r.code, 0, r.stderr);
  const text = await fs.readFile(path.join(mig, 'element-keys.txt'), 'utf8');
  t.true(text.startsWith('-----BEGIN MEGOLM SESSION DATA-----'));
  const { sdk } = await import('./helpers/oracle.js');
  await newMachine();
  const json = sdk.OlmMachine.decryptExportedRoomKeys(text, 'export passphrase');
  const machine = await newMachine();
  await machine.importExportedRoomKeys(json, () => undefined);
  const after = await decryptEvents(machine, f.expected.events);
  t.is(after.ok, f.expected.events.length);
  t.throws(() => sdk.OlmMachine.decryptExportedRoomKeys(text, 'wrong'));
});
