/**
 * What matrix-bot-sdk 0.8.0 sees when it starts on a crypto folder: the genuine matrix-sdk-sqlite /
 * matrix-sdk-crypto 0.9 open the SQLite store with a passphrase, then an OlmMachine for the store's
 * user and the device in bot-sdk.json (crates/sqlite-convert/examples/open_as_bot.rs). `cargo test`
 * builds the example before ava runs; on its own, it is built here once.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './paths.js';

const BIN = path.join(ROOT, 'target', 'release', 'examples', 'open_as_bot');

export type BotView = { user_id: string; device_id: string; curve25519: string; ed25519: string; room_keys: number } | { error: string };

/** `null` passes no passphrase at all, as a custom bot passing `null` to OlmMachine.initialize does. */
export function openAsTheBot(cryptoStoreDir: string, passphrase: string | null = ''): BotView {
  if (!existsSync(BIN)) execFileSync('cargo', ['build', '--release', '--quiet', '-p', 'sqlite-convert', '--example', 'open_as_bot'], { cwd: ROOT, stdio: 'inherit' });
  const r = spawnSync(BIN, [cryptoStoreDir, passphrase ?? '--no-passphrase'], { encoding: 'utf8' });
  return JSON.parse(r.stdout) as BotView;
}
