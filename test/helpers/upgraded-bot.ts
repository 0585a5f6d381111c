/**
 * What matrix-bot-sdk 0.8.0 sees when it starts on a crypto folder: the genuine matrix-sdk-sqlite /
 * matrix-sdk-crypto 0.9 open the SQLite store with a passphrase, then an OlmMachine for the store's
 * user and the device in bot-sdk.json (crates/sqlite-convert/examples/open_as_bot.rs). `cargo test`
 * builds the example before ava runs; on its own, it is built here once.
 */
import { execFile, execFileSync } from 'node:child_process';
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
