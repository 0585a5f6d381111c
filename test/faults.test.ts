/**
 * Faults between us and the homeserver, and surprises on it: a fault-injecting proxy process
 * (test/faults/fault-proxy.mjs) in front of the real Synapse. Each case ends either complete, with
 * the server holding exactly the store's keys (decrypted by the wasm oracle), or with one clear
 * line, its documented exit code, and a state from which a rerun finishes the job.
 */
import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { committedFixture, generatedFixture, keyIdentity, type Fixture } from './helpers/fixtures.js';
import { api, freshUser, useSynapse, type WithSynapse } from './helpers/homeserver.js';
import { envFor, serverKeys, tempDir } from './helpers/migration.js';

const test = anyTest as TestFn<WithSynapse>;
useSynapse(test);

/** The documented budget, shrunk so that a test waits milliseconds where an operator waits seconds. */
const FAST_RETRY = { MIGRATION_RETRY_BASE_MS: '50', MIGRATION_RETRY_CAP_MS: '400' };
/** CI runs one fault sequence; `SOAK=10 npx ava test/faults.test.ts` runs ten different ones. */
const SOAK = Math.max(1, Number(process.env.SOAK ?? 1));

test('network faults on 20% of requests (resets, 500/502/503, 429, delays, answers cut halfway): all completes, every key on the server', async (t) => {
  const { synapse } = t.context;
  const f = generatedFixture('many', 3000, 5);
  for (let round = 0; round < SOAK; round++) await faultyRun(t, synapse, f, 11 + round);
});

async function faultyRun(t: ExecutionContext<WithSynapse>, synapse: WithSynapse['synapse'], f: Fixture, seed: number): Promise<void> {
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const proxy = await startFaultProxy(synapse.baseUrl, { rate: 0.2, seed });
  t.teardown(() => proxy.stop());
  // Small bodies: about 90 upload requests, so the faults hit the upload many times.
  const r = await runCli(['all', '--body-limit', '32768'], { ...envFor(f, proxy.url, user.accessToken, mig), ...FAST_RETRY });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /Status: COMPLETE/);
  const stats = proxy.stats();
  const kinds = ['reset', '500', '502', '503', '429', 'delay', 'cut'].filter((k) => (stats[k] ?? 0) > 0);
  t.true(kinds.length >= 4, `faults injected: ${JSON.stringify(stats)}`);
  t.regex(r.stderr, /retrying in/);
  t.deepEqual(await serverKeys(synapse, user.accessToken, await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8')), f.expected.keys.map(keyIdentity).sort());
}

test('a total outage: exit 8 after the retry budget with the state kept; the rerun finishes the job', async (t) => {
  const { synapse } = t.context;
  const f = generatedFixture('many', 3000, 5);
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const proxy = await startFaultProxy(synapse.baseUrl, { rate: 1, faults: ['503'], path: '/room_keys/keys' });
  t.teardown(() => proxy.stop());
  const down = await runCli(['all', '--in-flight', '1'], { ...envFor(f, proxy.url, user.accessToken, mig), ...FAST_RETRY, MIGRATION_RETRY_ATTEMPTS: '3' });
  t.is(down.code, 8, down.stderr);
  t.regex(down.stderr, /error: .*503.*\. Fix: .*rerun/i);
  t.is(proxy.stats()['503'], 3, 'exactly the budget of attempts');
  const state = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8'));
  t.truthy(state.backup.version);
  const again = await runCli(['all'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /reused/);
  t.deepEqual(await serverKeys(synapse, user.accessToken, await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8')), f.expected.keys.map(keyIdentity).sort());
});

test('413 from a reverse proxy: request bodies halve until they pass, nothing lost', async (t) => {
  const { synapse } = t.context;
  const f = generatedFixture('many', 3000, 5);
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const proxy = await startFaultProxy(synapse.baseUrl, { rate: 0, maxBody: 150_000 });
  t.teardown(() => proxy.stop());
  const r = await runCli(['all'], envFor(f, proxy.url, user.accessToken, mig));
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /too large \(413\); using requests of at most \d+ bytes/);
  t.true((proxy.stats()['413'] ?? 0) > 0);
  t.deepEqual(await serverKeys(synapse, user.accessToken, await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8')), f.expected.keys.map(keyIdentity).sort());
});

test('a homeserver that spends long on every upload request: bodies grow (fewer requests), nothing lost', async (t) => {
  const { synapse } = t.context;
  const f = generatedFixture('many', 3000, 5);
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  // 150 ms per request, one at a time, against a few ms for 64 KB of keys: as Synapse's count of a big backup.
  const proxy = await startFaultProxy(synapse.baseUrl, { rate: 0, path: '/room_keys/keys', perRequestMs: 150 });
  t.teardown(() => proxy.stop());
  const r = await runCli(['all', '--json', '--body-limit', '65536', '--max-body-limit', '1048576'], envFor(f, proxy.url, user.accessToken, mig));
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /larger requests cost the homeserver \d+ µs a key instead of \d+: requests of up to [\d.]+ MiB from now on/);
  const upload = (JSON.parse(r.stdout) as { upload: { requests: number; final_body_limit: number } }).upload;
  t.true(upload.final_body_limit > 65536, `the limit grew (${upload.final_body_limit})`);
  // 3000 keys of about 900 bytes at 64 KB a request would be about 45 requests.
  t.true(upload.requests < 30, `${upload.requests} requests`);
  t.deepEqual(await serverKeys(synapse, user.accessToken, await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8')), f.expected.keys.map(keyIdentity).sort());
});

test('a URL that answers an HTML page is not a homeserver: exit 8, nothing written', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('plain');
  const mig = await tempDir(t);
  const proxy = await startFaultProxy(synapse.baseUrl, { html: true });
  t.teardown(() => proxy.stop());
  const r = await runCli(['enable'], envFor(f, proxy.url, 'token', mig));
  t.is(r.code, 8, r.stderr);
  t.regex(r.stderr, /not a Matrix homeserver|HTML/i);
  t.deepEqual(await fs.readdir(mig), []);
});

test('a revoked access token: exit 9 naming the token, state kept; a new token finishes the job', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('empty-passphrase');
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  t.is((await runCli(['enable'], envFor(f, synapse.baseUrl, user.accessToken, mig))).code, 0);
  t.is((await api(synapse, user.accessToken, 'POST', '/_matrix/client/v3/logout', {})).status, 200);
  const r = await runCli(['upload'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(r.code, 9, r.stderr);
  t.regex(r.stderr, /ACCESS_TOKEN/);
  const login = await api<{ access_token: string }>(synapse, '', 'POST', '/_matrix/client/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: user.userId }, password: user.password });
  const again = await runCli(['all'], envFor(f, synapse.baseUrl, login.json.access_token, mig));
  t.is(again.code, 0, again.stderr);
});

test('the backup version deleted before the upload: exit 10 with the wrong-version message', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('empty-passphrase');
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  t.is((await runCli(['enable'], envFor(f, synapse.baseUrl, user.accessToken, mig))).code, 0);
  const state = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8'));
  t.is((await api(synapse, user.accessToken, 'DELETE', `/_matrix/client/v3/room_keys/version/${state.backup.version}`)).status, 200);
  const r = await runCli(['upload'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(r.code, 10, r.stderr);
  t.regex(r.stderr, /current backup version is none.*run `enable` again/);
});

test('recovery-key files that do not match the server\'s backup: refused (exit 10) before any key leaves', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('empty-passphrase');
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  const other = await tempDir(t);
  t.is((await runCli(['enable'], envFor(f, synapse.baseUrl, user.accessToken, mig))).code, 0);
  t.is((await runCli(['enable'], envFor(f, synapse.baseUrl, (await freshUser(synapse)).accessToken, other))).code, 0);
  for (const file of ['recovery-key.txt', 'backup-private-key.bin', 'backup-public-key.txt']) await fs.copyFile(path.join(other, file), path.join(mig, file));
  const r = await runCli(['upload'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(r.code, 10, r.stderr);
  t.regex(r.stderr, /does not use the key in .*recovery-key.txt/);
  const version = await api<{ count: number }>(synapse, user.accessToken, 'GET', '/_matrix/client/v3/room_keys/version');
  t.is(version.json.count, 0);
});

test('a damaged migration-state.json: exit 12 naming the file and the fix', async (t) => {
  const { synapse } = t.context;
  const f = committedFixture('empty-passphrase');
  const user = await freshUser(synapse);
  const mig = await tempDir(t);
  t.is((await runCli(['enable'], envFor(f, synapse.baseUrl, user.accessToken, mig))).code, 0);
  await fs.writeFile(path.join(mig, 'migration-state.json'), '{"schema":1,"backup":{"vers');
  const r = await runCli(['upload'], envFor(f, synapse.baseUrl, user.accessToken, mig));
  t.is(r.code, 12, r.stderr);
  t.regex(r.stderr, /migration-state.json is damaged.*move it aside/);
});

test('a self-signed certificate is refused naming --ca-file; with --ca-file (and with CA_FILE) the same run succeeds', async (t) => {
  const { synapse } = t.context;
  const dir = await tempDir(t);
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { cwd: dir });
  if (made.status !== 0) return t.fail(`openssl: ${made.stderr}`);
  // A TLS-terminating proxy to the real Synapse, as a reverse proxy with a private CA would be.
  const server = https.createServer({ key: await fs.readFile(path.join(dir, 'key.pem')), cert: await fs.readFile(path.join(dir, 'cert.pem')) }, async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const up = await fetch(`${synapse.baseUrl}${req.url}`, { method: req.method, headers: { authorization: req.headers.authorization ?? '', 'content-type': 'application/json' }, body: chunks.length ? Buffer.concat(chunks) : undefined });
    res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/json' });
    res.end(Buffer.from(await up.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => void server.close());
  const url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  const f = committedFixture('empty-passphrase');
  const user = await freshUser(synapse);
  const mig = path.join(dir, 'mig');
  const refused = await runCli(['enable'], envFor(f, url, user.accessToken, mig));
  t.is(refused.code, 8, refused.stderr);
  t.regex(refused.stderr, /certificate was refused.*--ca-file FILE \(CA_FILE\)/);
  const accepted = await runCli(['all', '--ca-file', path.join(dir, 'cert.pem')], envFor(f, url, user.accessToken, mig));
  t.is(accepted.code, 0, accepted.stderr);
  t.regex(accepted.stdout, /Status: COMPLETE/);
  const viaEnv = await runCli(['verify'], { ...envFor(f, url, user.accessToken, mig), CA_FILE: path.join(dir, 'cert.pem') });
  t.is(viaEnv.code, 0, viaEnv.stderr);
  const missing = await runCli(['verify', '--ca-file', path.join(dir, 'nope.pem')], envFor(f, url, user.accessToken, mig));
  t.is(missing.code, 2);
  t.regex(missing.stderr, /CA file .* does not exist/);
});
