/**
 * `merge` at scale: N keys of a Sled store (N = 10k, 100k) into the SQLite store of an upgraded bot
 * that already holds 10k keys of its own. Wall time and peak RSS of the whole CLI process
 * (/usr/bin/time). Run after `npm run build`: npx tsx scripts/bench/merge.ts [N ...]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const CLI = path.join(ROOT, 'lib', 'cli.js');
const TARGET = process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target');

function run(cmd: string, args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.status}\n${r.stderr}`);
  return r.stdout;
}

/** A genuine Sled store with `n` room keys (crates/fixture-writer; fresh random keys each time). */
function sledStore(dir: string, n: number): string {
  run('cargo', ['run', '--release', '--quiet', '--manifest-path', path.join(ROOT, 'crates', 'fixture-writer', 'Cargo.toml'), '--', dir, '--case', 'many', '--sessions', String(n), '--rooms', '5']);
  return path.join(dir, 'many', 'store');
}

run('cargo', ['build', '--release', '--quiet', '-p', 'sqlite-convert', '--example', 'upgraded-bot-store']);
const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
for (const n of sizes.length ? sizes : [10_000, 100_000]) {
  const work = mkdtempSync(path.join(os.tmpdir(), 'bench-merge-'));
  try {
    const store = sledStore(path.join(work, 'old'), n);
    const own = sledStore(path.join(work, 'own'), 10_000);
    const user = (JSON.parse(readFileSync(path.join(store, '..', 'expected.json'), 'utf8')) as { user_id: string }).user_id;
    run(path.join(TARGET, 'release', 'examples', 'upgraded-bot-store'), [store, user, 'NEWDEVICE']);
    // The upgraded bot's own 10k keys (other sessions than the Sled store's).
    const ownKeys = path.join(work, 'own-keys.json');
    run('node', [CLI, 'extract', '--output', ownKeys], { CRYPTO_STORE_PATH: own, MIGRATION_DIR: work });
    const prefill = JSON.parse(run('node', [CLI, 'merge', '--from', ownKeys, '--json'], { CRYPTO_STORE_PATH: store, MIGRATION_DIR: work }));
    const timed = spawnSync('/usr/bin/time', ['-f', '%e %M', process.execPath, '--max-semi-space-size=1', CLI, 'merge', '--json'], { encoding: 'utf8', env: { ...process.env, CRYPTO_STORE_PATH: store, MIGRATION_DIR: work } });
    if (timed.status !== 0) throw new Error(timed.stderr);
    const [seconds, kb] = timed.stderr.trim().split('\n').pop()!.split(' ').map(Number);
    const r = JSON.parse(timed.stdout);
    console.log(JSON.stringify({ sled_keys: n, store_keys_before: r.room_keys_before, prefilled: prefill.added, added: r.added, already_present: r.already_present, room_keys_after: r.room_keys_after, seconds, peak_rss_mb: Math.round(kb! / 1024), keys_per_s: Math.round(n / seconds!) }));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
