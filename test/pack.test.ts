/**
 * What a user installs: the main package and the linux-x64-gnu package, packed with `npm pack`,
 * installed from the tarballs into an empty folder without network and with no Rust on PATH, then
 * run as `npx sled-migration-tool`.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { committedFixture } from './helpers/fixtures.js';
import { ROOT } from './helpers/paths.js';

const PLATFORM = 'linux-x64-gnu';
const supported = process.platform === 'linux' && process.arch === 'x64' && existsSync(path.join(ROOT, 'native', `sled-migration-tool.${PLATFORM}.node`));
const packTest = supported ? test : test.skip;

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 240_000 });
  return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
}

packTest('npm pack, install offline from the tarballs without Rust, then npx sled-migration-tool --help and extract', (t) => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'pack-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  // The platform package, as the release job assembles it: its package.json and the built addon.
  const platformDir = path.join(work, 'platform');
  cpSync(path.join(ROOT, 'npm', PLATFORM), platformDir, { recursive: true });
  cpSync(path.join(ROOT, 'native', `sled-migration-tool.${PLATFORM}.node`), path.join(platformDir, `sled-migration-tool.${PLATFORM}.node`));
  const packedPlatform = run('npm', ['pack', '--pack-destination', work, '--ignore-scripts'], platformDir);
  t.is(packedPlatform.code, 0, packedPlatform.out);
  const packedMain = run('npm', ['pack', '--pack-destination', work, '--ignore-scripts'], ROOT);
  t.is(packedMain.code, 0, packedMain.out);
  const tarballs = readdirSync(work).filter((f) => f.endsWith('.tgz'));
  const main = tarballs.find((f) => /^sled-migration-tool-\d/.test(f))!;
  const platform = tarballs.find((f) => f.startsWith(`sled-migration-tool-${PLATFORM}`))!;
  t.truthy(main && platform, tarballs.join(', '));

  // npm's cache gets the registry dependencies first, as a user's npm fetches them from the registry
  // (a fresh machine's cache holds only the tarballs package-lock.json named, not their metadata).
  const deps = Object.entries((JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies).map(([n, v]) => `${n}@${v}`);
  const warm = path.join(work, 'warm');
  spawnSync('mkdir', ['-p', warm]);
  writeFileSync(path.join(warm, 'package.json'), '{"name":"warm","version":"1.0.0","private":true}\n');
  const warmed = run('npm', ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', ...deps], warm);
  t.is(warmed.code, 0, warmed.out);

  // An empty project; no network (--offline: dependencies only from npm's cache), no cargo on PATH.
  const app = path.join(work, 'app');
  spawnSync('mkdir', ['-p', app]);
  writeFileSync(path.join(app, 'package.json'), '{"name":"operator","version":"1.0.0","private":true}\n');
  const noRust = { ...process.env, PATH: (process.env.PATH ?? '').split(':').filter((p) => !/cargo|rustup/.test(p)).join(':'), npm_config_offline: 'true' };
  t.is(spawnSync('cargo', ['--version'], { env: noRust }).error?.message.includes('ENOENT') ?? false, true, 'cargo is not reachable');
  const installed = run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(work, main), path.join(work, platform)], app, noRust);
  t.is(installed.code, 0, installed.out);
  const pkgDir = path.join(app, 'node_modules', 'sled-migration-tool');
  t.false(existsSync(path.join(pkgDir, 'crates')), 'no Rust sources shipped');
  t.false(readdirSync(path.join(pkgDir, 'native')).some((f) => f.endsWith('.node')), 'the binary comes from the platform package');
  t.true(existsSync(path.join(app, 'node_modules', `sled-migration-tool-${PLATFORM}`, `sled-migration-tool.${PLATFORM}.node`)));

  const help = run('npx', ['--offline', 'sled-migration-tool', '--help'], app, noRust);
  t.is(help.code, 0, help.out);
  t.regex(help.out, /extract/);
  t.regex(help.out, /restore/);

  const f = committedFixture('plain');
  const mig = path.join(work, 'mig');
  const extracted = run('npx', ['--offline', 'sled-migration-tool', 'extract', '--crypto-store-path', f.store, '--migration-dir', mig], app, noRust);
  t.is(extracted.code, 0, extracted.out);
  t.regex(extracted.out, new RegExp(`${f.expected.keys.length} succeeded, 0 failed`));
  const doc = JSON.parse(readFileSync(path.join(mig, 'extracted-keys.json'), 'utf8')) as { total_keys: number };
  t.is(doc.total_keys, f.expected.keys.length);
});
