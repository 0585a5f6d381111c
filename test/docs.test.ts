/**
 * The documentation runs: every shell block of README.md and docs/*.md that calls the tool is
 * executed, in order and in one shell per document, against a copy of a genuine store and the test
 * Synapse, with the documents' example paths, URL, token, password and device replaced by real ones.
 * Blocks that cannot run here are listed with the reason.
 */
import anyTest, { type TestFn } from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { committedFixture } from './helpers/fixtures.js';
import { api, useSynapse, type WithSynapse } from './helpers/homeserver.js';
import { CLI, ROOT } from './helpers/paths.js';

const test = anyTest as TestFn<WithSynapse>;
// The fixture's bot is @bot:example.org: a Synapse of that name holds its account, so `convert`
// can check that the documents' token is the store's device, as it does for an operator.
useSynapse(test, { serverName: 'example.org' });

/** Shell lines that are not ours to run here, and why. */
const NOT_RUN: [RegExp, string][] = [
  [/^npm install && npm (run demo|test)/, 'the CI and `npm run demo` run these two'],
  [/^curl .*\/login /, 'a password login: the documents show the call, the world here logs in its own devices'],
];

function shellBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```(?:sh|bash)\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

function docs(): { name: string; text: string }[] {
  const files = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  return files.map((name) => ({ name, text: readFileSync(path.join(ROOT, name), 'utf8') }));
}

test('every shell block of the documentation that runs the tool succeeds as written', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('empty-passphrase');
  const work = mkdtempSync(path.join(os.tmpdir(), 'docs-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  // `sled-migration-tool` on PATH, as `npm link` or `npx` give it
  const bin = path.join(work, 'bin');
  mkdirSync(bin);
  writeFileSync(path.join(bin, 'sled-migration-tool'), `#!/bin/sh\nexec "${process.execPath}" --max-semi-space-size=1 "${CLI}" "$@"\n`);
  chmodSync(path.join(bin, 'sled-migration-tool'), 0o755);

  const bot = await synapse.registerUser('bot');
  let ran = 0;
  const skipped: string[] = [];
  for (const doc of docs()) {
    const lines = shellBlocks(doc.text)
      .flatMap((b) => b.split('\n'))
      .map((l) => l.replace(/\s+#.*$/, '').trim())
      .filter((l) => l && !l.startsWith('#'));
    const runnable = lines.filter((l) => {
      const why = NOT_RUN.find(([re]) => re.test(l));
      if (why) skipped.push(`${doc.name}: ${l} (${why[1]})`);
      return !why;
    });
    if (!runnable.some((l) => /sled-migration-tool/.test(l))) continue;

    // A fresh world per document: the bot's storage with its Sled store, the bot's account with no
    // key backup, its old device (the one bot-sdk.json names) and a token of it (the bot's token, as
    // `convert` wants it), a token of the upgraded bot's new device (for `delete-device`, which
    // removes the old one), an empty migration folder.
    const root = mkdtempSync(path.join(work, 'doc-'));
    const storage = path.join(root, 'bot-storage');
    const migration = path.join(root, 'migration');
    cpSync(f.store, path.join(storage, 'encrypted'), { recursive: true });
    const user = await synapse.login(bot, f.expected.device_id);
    const newBot = await synapse.login(bot);
    const backup = await api<{ version?: string }>(synapse, user.accessToken, 'GET', '/_matrix/client/v3/room_keys/version');
    if (backup.json.version) await api(synapse, user.accessToken, 'DELETE', `/_matrix/client/v3/room_keys/version/${backup.json.version}`);
    const substitute = (l: string) =>
      l
        .replaceAll('/data/bot-storage', storage)
        .replaceAll('/data/migration', migration)
        .replaceAll('https://matrix.example.org', synapse.baseUrl)
        .replace(/syt_\.\.\./g, user.accessToken)
        .replace(/MIGRATION_PASSWORD=\.\.\./g, `ACCESS_TOKEN='${newBot.accessToken}' MIGRATION_PASSWORD='${user.password}'`)
        .replace(/MIGRATION_CONFIRM=ABCDEFGHIJ/g, `MIGRATION_CONFIRM=${f.expected.device_id}`)
        .replace(/--from \S*migration-backup-\d{8}-\d{6}/g, `--from "$(ls -d ${migration}/migration-backup-* | tail -1)"`)
        .replace(/^npx sled-migration-tool/, 'sled-migration-tool');
    const script = ['set -e', `export STORAGE_PATH='${storage}' MIGRATION_DIR='${migration}' HOMESERVER_URL='${synapse.baseUrl}' ACCESS_TOKEN='${user.accessToken}'`, `cd '${root}'`, ...runnable.map((l) => `(${substitute(l)})`)].join('\n');
    const r = spawnSync('bash', ['-c', script], { env: { ...process.env, CI: 'true', PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8', timeout: 300_000 });
    t.is(r.status, 0, `${doc.name}\n${script}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
    ran += runnable.filter((l) => /sled-migration-tool/.test(l)).length;
  }
  t.true(ran >= 8, `commands run: ${ran}`);
  t.log(`ran ${ran} documented commands; not run here:\n${skipped.join('\n')}`);
});
