/**
 * The homeserver most bots migrate into runs Synapse on PostgreSQL: the whole backup path against
 * one (a throwaway cluster, src/devtools/local-postgres.ts), checked in the server's own tables.
 */
import test from 'ava';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalSynapse } from '../src/devtools/local-synapse.js';
import { runCli } from './helpers/cli.js';
import { committedFixture, copyFixture } from './helpers/fixtures.js';

test('all (enable → upload → verify) into Synapse on PostgreSQL: every key lands in its e2e_room_keys table', async (t) => {
  const synapse = await LocalSynapse.start({ database: 'postgres' });
  t.teardown(() => synapse.stop());
  t.truthy(synapse.postgres);
  const f = copyFixture(committedFixture('empty-passphrase'));
  const mig = await fs.mkdtemp(path.join(os.tmpdir(), 'pg-'));
  t.teardown(async () => {
    await fs.rm(mig, { recursive: true, force: true });
    await fs.rm(f.dir, { recursive: true, force: true });
  });
  const user = await synapse.registerUser('pgbot');
  const r = await runCli(['all', '--json'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: user.accessToken });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /Status: COMPLETE/);
  const rows = synapse.postgres!.query(`SELECT count(*) FROM e2e_room_keys WHERE user_id = '${user.userId}'`).trim();
  t.is(Number(rows), f.expected.keys.length, 'the keys are rows of PostgreSQL');
});
