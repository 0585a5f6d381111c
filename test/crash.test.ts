/**
 * SIGKILL at random moments of backup, extract and upload (20 in all, seeded so a failure can be
 * replayed). After each: nothing claims to be complete that is not, a rerun completes, the server
 * holds exactly the store's keys, and the source store is byte-identical to before.
 */
import anyTest, { type TestFn } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from './helpers/cli.js';
import { generatedFixture, keyIdentity, treeHashes } from './helpers/fixtures.js';
import { freshUser, useSynapse, type WithSynapse } from './helpers/homeserver.js';
import { envFor, serverKeys, tempDir } from './helpers/migration.js';
import { CLI } from './helpers/paths.js';

const test = anyTest as TestFn<WithSynapse>;
useSynapse(test);

let seed = Number(process.env.CRASH_SEED ?? 20261124);
/** CI runs 20 kills; `SOAK=10 npx ava test/crash.test.ts` runs ten times as many. */
const SOAK = Math.max(1, Number(process.env.SOAK ?? 1));
function random(): number {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
}

/** Starts the CLI and SIGKILLs it after `ms` (if it is still running); resolves with how it ended. */
function killAfter(args: string[], env: Record<string, string>, ms: number): Promise<{ killed: boolean; code: number | null }> {
  return killWhen(args, env, (kill) => setTimeout(kill, ms));
}

/**
 * Starts an upload and SIGKILLs it `ms` after its first checkpoint is on disk: a kill mid-upload
 * whatever the machine's speed (on a busy machine, a kill timed from the start can land before the
 * first request is answered, every time).
 */
function killAfterCheckpoint(args: string[], env: Record<string, string>, migrationDir: string, ms: number): Promise<{ killed: boolean; code: number | null }> {
  const statePath = path.join(migrationDir, 'migration-state.json');
  return killWhen(args, env, (kill) => {
    const poll = setInterval(() => {
      if (acknowledged(statePath) > 0) {
        clearInterval(poll);
        setTimeout(kill, ms);
      }
    }, 5);
    return poll;
  });
}

function acknowledged(statePath: string): number {
  try {
    const state = JSON.parse(readFileSync(statePath, 'utf8')) as { upload?: { sessions_acknowledged: number } };
    return state.upload?.sessions_acknowledged ?? 0;
  } catch {
    return 0; // not written yet
  }
}

/** Starts the CLI; `arm` decides when to kill it (and returns its timer); resolves with how it ended. */
function killWhen(args: string[], env: Record<string, string>, arm: (kill: () => void) => NodeJS.Timeout): Promise<{ killed: boolean; code: number | null }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CI: 'true', ...env }, stdio: 'ignore' });
  const timer = arm(() => child.kill('SIGKILL'));
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer); // Node's clearTimeout clears an interval too
      resolve({ killed: signal === 'SIGKILL', code });
    }),
  );
}

test('20 SIGKILLs across backup, extract and upload: every rerun completes, nothing lost, nothing falsely complete, the source unchanged', async (t) => {
  const { synapse } = t.context;
  const f = generatedFixture('many', 3000, 5);
  const expected = f.expected.keys.map(keyIdentity).sort();
  const source = treeHashes(f.store);
  const log: string[] = [];

  // backup ×5: a killed backup leaves only *.incomplete; every folder with the final name checks out.
  const backupDir = await tempDir(t);
  for (let i = 0; i < 5 * SOAK; i++) {
    const ms = 20 + Math.floor(random() * 250);
    const run = await killAfter(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: backupDir }, ms);
    for (const name of readdirSync(backupDir).filter((n) => /^migration-backup-\d{8}-\d{6}$/.test(n))) {
      const check = spawnSync('sha256sum', ['-c', '--quiet', 'checksums.sha256'], { cwd: path.join(backupDir, name), encoding: 'utf8' });
      t.is(check.status, 0, `backup kill ${i} at ${ms} ms: ${name} looks complete but does not check out`);
    }
    const again = await runCli(['backup'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: backupDir });
    t.is(again.code, 0, again.stderr);
    log.push(`backup at ${ms} ms: ${run.killed ? 'killed' : `finished first (${run.code})`}`);
    await new Promise((r) => setTimeout(r, 1000)); // the next backup gets the next second's name
  }
  const restore = await runCli(['restore', '--dry-run'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: backupDir });
  t.is(restore.code, 0, restore.stderr);

  // extract ×5: extracted-keys.json is absent or whole; the rerun leaves no temporary file behind.
  const extractDir = await tempDir(t);
  for (let i = 0; i < 5 * SOAK; i++) {
    const ms = 30 + Math.floor(random() * 330);
    const run = await killAfter(['extract'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: extractDir }, ms);
    const output = path.join(extractDir, 'extracted-keys.json');
    if (existsSync(output)) {
      const doc = JSON.parse(await fs.readFile(output, 'utf8')) as { total_keys: number; keys: unknown[] };
      t.is(doc.keys.length, expected.length, `extract kill ${i}: a complete-looking file is complete`);
      t.is(doc.total_keys, expected.length);
      await fs.rm(output);
    }
    const again = await runCli(['extract'], { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: extractDir });
    t.is(again.code, 0, again.stderr);
    t.deepEqual(readdirSync(extractDir).filter((n) => n.includes('.tmp-')), [], 'no abandoned temporary file (they hold plaintext keys)');
    await fs.rm(output);
    log.push(`extract at ${ms} ms: ${run.killed ? 'killed' : `finished first (${run.code})`}`);
  }

  // upload ×10, each into a fresh backup: killed, rerun, then exactly the store's keys on the server.
  let resumed = 0;
  for (let i = 0; i < 10 * SOAK; i++) {
    const user = await freshUser(synapse);
    const mig = await tempDir(t);
    const env = envFor(f, synapse.baseUrl, user.accessToken, mig);
    t.is((await runCli(['enable'], env)).code, 0);
    // Half the kills at a random moment from the start (the open, the first requests), half a
    // random moment after the first checkpoint (mid-upload).
    const fromCheckpoint = i % 2 === 1;
    const ms = fromCheckpoint ? Math.floor(random() * 400) : 300 + Math.floor(random() * 1200);
    const args = ['upload', '--body-limit', '8192'];
    const run = fromCheckpoint ? await killAfterCheckpoint(args, env, mig, ms) : await killAfter(args, env, ms);
    const state = JSON.parse(await fs.readFile(path.join(mig, 'migration-state.json'), 'utf8')) as { upload?: { sessions_acknowledged: number } };
    const again = await runCli(['upload', '--body-limit', '8192'], env);
    t.is(again.code, 0, again.stderr);
    if (run.killed && (state.upload?.sessions_acknowledged ?? 0) > 0) {
      resumed++;
      t.regex(again.stderr, /resuming the upload/);
    }
    t.deepEqual(await serverKeys(synapse, user.accessToken, await fs.readFile(path.join(mig, 'recovery-key.txt'), 'utf8')), expected, `upload kill ${i} at ${ms} ms`);
    log.push(`upload at ${ms} ms${fromCheckpoint ? ' after the first checkpoint' : ''}: ${run.killed ? `killed after ${state.upload?.sessions_acknowledged ?? 0} acknowledged` : `finished first (${run.code})`}`);
  }
  t.true(resumed >= 3, `at least some kills landed mid-upload:\n${log.join('\n')}`);
  t.deepEqual(treeHashes(f.store), source, 'the source store is byte-identical');
  t.log(log.join('\n'));
});
