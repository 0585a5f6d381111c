/**
 * What matrix-bot-sdk 0.8.0 sees when it starts on a crypto folder: the genuine matrix-sdk-sqlite /
 * matrix-sdk-crypto 0.9 open the SQLite store with a passphrase, then an OlmMachine for the store's
 * user and the device in bot-sdk.json (crates/sqlite-convert/examples/open_as_bot.rs). `cargo test`
 * builds the example before ava runs; on its own, it is built here once.
 *
 * And the store an upgraded bot leaves beside the old Sled store, written by the genuine
 * matrix-sdk-crypto / matrix-sdk-sqlite 0.9 (crates/sqlite-convert/examples/upgraded-bot-store.rs,
 * the same builder as the Rust merge tests), and a bot that holds it open.
 */
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './paths.js';

const BIN = path.join(ROOT, 'target', 'release', 'examples', 'open_as_bot');

export type BotView = { user_id: string; device_id: string; curve25519: string; ed25519: string; room_keys: number } | { error: string };

/**
 * `null` passes no passphrase at all, as a custom bot passing `null` to OlmMachine.initialize does.
 * Asynchronous: a test file's other tests (a kill timed on the files a run writes) keep their
 * event loop meanwhile.
 */
export function openAsTheBot(cryptoStoreDir: string, passphrase: string | null = ''): Promise<BotView> {
  if (!existsSync(BIN)) execFileSync('cargo', ['build', '--release', '--quiet', '-p', 'sqlite-convert', '--example', 'open_as_bot'], { cwd: ROOT, stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    // exits 1 with the bot's error as JSON on stdout: that is an answer too
    execFile(BIN, [cryptoStoreDir, passphrase ?? '--no-passphrase'], { encoding: 'utf8' }, (_error, stdout) => {
      try {
        resolve(JSON.parse(stdout) as BotView);
      } catch (e) {
        reject(new Error(`open_as_bot printed no answer: ${String(e)} ${stdout}`));
      }
    });
  });
}

let built: string | undefined;

/** Builds the example once per test process; returns its path. */
function example(): string {
  if (built) return built;
  const r = spawnSync('cargo', ['build', '--release', '--quiet', '--manifest-path', path.join(ROOT, 'Cargo.toml'), '-p', 'sqlite-convert', '--example', 'upgraded-bot-store'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`building upgraded-bot-store failed (${r.status})`);
  built = path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'release', 'examples', 'upgraded-bot-store');
  return built;
}

/** Writes `store/matrix-sdk-crypto.sqlite3` for `user` on `device`; returns the account's ed25519 key. */
export function upgradedBotStore(store: string, user: string, device: string): string {
  const r = spawnSync(example(), [store, user, device], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`upgraded-bot-store failed (${r.status})`);
  return r.stdout.trim();
}

/** A running bot: the store open, a write in its log. `kill()` ends it with SIGKILL (no clean close). */
export async function runningBot(store: string): Promise<{ kill(): Promise<void> }> {
  const child = spawn(example(), [store, '@bot:example.org', 'NEWDEVICE', '--hold'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    child.on('exit', (code) => reject(new Error(`the holding bot exited (${code})`)));
  });
  return {
    kill: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.on('exit', () => resolve());
        child.kill('SIGKILL');
      }),
  };
}
