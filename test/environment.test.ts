/**
 * The environment is read in one place (src/environment.ts), where `VAR=""` and an unset `VAR` are
 * told apart. clipanion's own `env` drops empty values, so no option may declare one.
 */
import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fromEnvironment, setting, SETTINGS } from '../src/environment.js';
import { runCli } from './helpers/cli.js';
import { committedFixture, copyFixture } from './helpers/fixtures.js';
import { ROOT } from './helpers/paths.js';

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('no option declares clipanion\'s env, and only src/environment.ts reads process.env for settings', (t) => {
  for (const file of sources(path.join(ROOT, 'src'))) {
    const text = readFileSync(file, 'utf8');
    const rel = path.relative(ROOT, file);
    t.notRegex(text, /Option\.\w+\([^)]*\benv:/, `${rel} declares an option with env`);
    for (const name of Object.keys(SETTINGS)) {
      if (rel === path.join('src', 'environment.ts')) continue;
      t.false(text.includes(`process.env.${name}`) || text.includes(`process.env['${name}']`), `${rel} reads ${name} itself`);
    }
  }
});

test('"" is a value for passphrases, passwords and confirmations, and "not given" for paths and URLs', (t) => {
  const env = { STORE_PASSPHRASE: '', SQLITE_PASSPHRASE: '', EXPORT_PASSPHRASE: '', MIGRATION_PASSWORD: '', MIGRATION_CONFIRM: '', STORAGE_PATH: '', HOMESERVER_URL: '', ACCESS_TOKEN: '' };
  for (const name of ['STORE_PASSPHRASE', 'SQLITE_PASSPHRASE', 'EXPORT_PASSPHRASE', 'MIGRATION_PASSWORD', 'MIGRATION_CONFIRM'] as const) {
    t.is(fromEnvironment(name, env), '', name);
    t.is(fromEnvironment(name, {}), undefined, `${name} unset`);
  }
  for (const name of ['STORAGE_PATH', 'HOMESERVER_URL', 'ACCESS_TOKEN'] as const) t.is(fromEnvironment(name, env), undefined, name);
  t.is(fromEnvironment('STORE_PASSPHRASE', { STORE_PASSPHRASE: 'x' }), 'x');
});

test('a flag wins over its variable, and --x= (the empty string) is a value', (t) => {
  const saved = process.env.SQLITE_PASSPHRASE;
  process.env.SQLITE_PASSPHRASE = 'from-env';
  try {
    t.is(setting('', 'SQLITE_PASSPHRASE'), '');
    t.is(setting('flag', 'SQLITE_PASSPHRASE'), 'flag');
    t.is(setting(undefined, 'SQLITE_PASSPHRASE'), 'from-env');
  } finally {
    if (saved === undefined) delete process.env.SQLITE_PASSPHRASE;
    else process.env.SQLITE_PASSPHRASE = saved;
  }
});

// Each variable whose empty value means something, as an operator sets it.

test('EXPORT_PASSPHRASE="" is refused for a new export (it would be unprotected), not taken as "ask me"', async (t) => {
  const f = copyFixture(committedFixture('plain'));
  const mig = mkdtempSync(path.join(os.tmpdir(), 'env-'));
  t.teardown(() => {
    rmSync(mig, { recursive: true, force: true });
    rmSync(f.dir, { recursive: true, force: true });
  });
  const r = await runCli(['extract', '--format', 'megolm-export'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, EXPORT_PASSPHRASE: '' });
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /^error: EXPORT_PASSPHRASE is set to the empty string, which would leave the export unprotected/m);
  t.deepEqual(readdirSync(mig).filter((n) => !n.startsWith('.')), [], 'no export written');
});

test('MIGRATION_CONFIRM="" is a confirmation that does not match, not a missing one', async (t) => {
  const mig = mkdtempSync(path.join(os.tmpdir(), 'env-'));
  t.teardown(() => rmSync(mig, { recursive: true, force: true }));
  // No store path: delete-device with OLD_DEVICE_ID needs none. The confirmation is checked before
  // any request (nothing listens on port 9).
  const r = await runCli(['delete-device'], { MIGRATION_DIR: mig, HOMESERVER_URL: 'http://127.0.0.1:9', ACCESS_TOKEN: 'unused', OLD_DEVICE_ID: 'OLDDEVICE', MIGRATION_CONFIRM: '', MIGRATION_PASSWORD: 'unused' });
  t.is(r.code, 13, r.stderr);
  t.regex(r.stderr, /the confirmation "" does not match the device ID OLDDEVICE/);
});
