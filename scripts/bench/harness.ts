/**
 * What every benchmark script shares: genuine stores from the fixture writer (cached in
 * .cache/bench/), a command run under /usr/bin/time (wall time, peak RSS, bytes written), the page
 * cache dropped where this machine lets us.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const CACHE = path.join(ROOT, '.cache', 'bench');
export const CLI = path.join(ROOT, 'lib', 'cli.js');
export const NODE_FLAGS = ['--max-semi-space-size=1']; // as the CLI's shebang
export const FIXTURE_WRITER = path.join(ROOT, 'crates', 'fixture-writer', 'target', 'release', 'fixture-writer');
/** Rooms of every benchmark store (the fixture writer spreads the sessions over them). */
export const ROOMS = 50;

export const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

export interface Timed<T> {
  result: T;
  peakRssMb: number;
  wallS: number;
  /** Bytes the process and its children wrote to the file system (`/usr/bin/time`'s %O, 512-byte blocks). */
  writtenBytes: number;
}

const TIME_FORMAT = ['-f', '@@RSS %M @@OUT %O'];

function measured<T>(t0: number, status: number | null, stdout: string, stderr: string, what: string, parse: (stdout: string) => T): Timed<T> {
  const wallS = (performance.now() - t0) / 1000;
  const m = /@@RSS (\d+) @@OUT (\d+)/.exec(stderr);
  if (status !== 0 || !m) throw new Error(`${what} failed (${status}): ${stderr.slice(-2000)}`);
  return { result: parse(stdout), peakRssMb: Number(m[1]) / 1024, wallS, writtenBytes: Number(m[2]) * 512 };
}

/** Runs a command under /usr/bin/time: its peak RSS, wall time, bytes written, and its stdout parsed by `parse`. */
export function timed<T>(cmd: string, argv: string[], parse: (stdout: string, r: SpawnSyncReturns<string>) => T, env: NodeJS.ProcessEnv = {}, cwd = ROOT): Timed<T> {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', [...TIME_FORMAT, cmd, ...argv], { cwd, env: { ...process.env, CI: 'true', ...env }, encoding: 'utf8', maxBuffer: 1 << 28 });
  return measured(t0, r.status, r.stdout, r.stderr, `${cmd} ${argv.join(' ')}`, (out) => parse(out, r));
}

/**
 * As {@link timed}, without blocking: `tick` runs every `everyMs` while the command runs (progress,
 * its resident set, server CPU) and may stop it (SIGTERM): a stopped run resolves with `result` undefined.
 */
export function timedAsync<T>(cmd: string, argv: string[], parse: (stdout: string) => T, env: NodeJS.ProcessEnv, tick: (stop: () => void, rssMb: () => number | undefined) => void, everyMs = 1000): Promise<Timed<T | undefined>> {
  const t0 = performance.now();
  const child = spawn('/usr/bin/time', [...TIME_FORMAT, cmd, ...argv], { cwd: ROOT, env: { ...process.env, CI: 'true', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  let stopped = false;
  // /usr/bin/time passes no signal on: the command itself is its only child.
  const stop = () => {
    if (stopped) return;
    stopped = true;
    spawnSync('pkill', ['-TERM', '-P', String(child.pid)]);
  };
  // The command's resident set now (/usr/bin/time's only child), for peaks per phase.
  const rssMb = () => {
    try {
      const pid = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ')[0];
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) / 1024 : undefined;
    } catch {
      return undefined;
    }
  };
  const timer = setInterval(() => tick(stop, rssMb), everyMs);
  return new Promise((resolve, reject) => {
    child.on('close', (status) => {
      clearInterval(timer);
      try {
        if (stopped) stderr = stderr.replace(/Command exited with non-zero status \d+\n/, '');
        resolve(measured(t0, stopped ? 0 : status, stdout, stderr, `${cmd} ${argv.join(' ')}`, (out) => (stopped ? undefined : parse(out))));
      } catch (e) {
        reject(e);
      }
    });
  });
}

export function lastJson<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').pop()!) as T;
}

export function buildFixtureWriter(): void {
  const r = spawnSync('cargo', ['build', '--release', '--quiet', '--manifest-path', path.join(ROOT, 'crates', 'fixture-writer', 'Cargo.toml')], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('building the fixture writer failed');
}

export interface BenchStore {
  dir: string;
  store: string;
  expected: string;
}

/** A genuine store from the fixture writer (`kase`: many, long-lived, bloated), cached by its parameters. */
export function store(kase: string, sessions: number, extra: string[] = []): BenchStore {
  const name = [kase, sessions, ...extra.filter((a) => !a.startsWith('--'))].join('-');
  const dir = path.join(CACHE, name);
  if (!existsSync(path.join(dir, 'expected.json'))) {
    log(`generating ${name} with the genuine matrix-sdk-crypto 0.6 / matrix-sdk-sled 0.2 (cached in ${path.relative(ROOT, CACHE)})`);
    const tmp = path.join(CACHE, `.${name}.tmp`);
    rmSync(tmp, { recursive: true, force: true });
    // Past a million sessions the writer's proof of its Olm exchange on a copy of the store needs
    // a second store's room (38 GB at 5M): the 5M store of 2026-12-05 ran out of disk there.
    const check = sessions > 1_000_000 ? ['--no-copy-check'] : [];
    const r = spawnSync(FIXTURE_WRITER, [tmp, '--case', kase, '--sessions', String(sessions), '--rooms', String(ROOMS), ...check, ...extra], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error(`fixture writer failed for ${name}`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(path.join(tmp, kase), dir);
    rmSync(tmp, { recursive: true, force: true });
  }
  return { dir, store: path.join(dir, 'store'), expected: path.join(dir, 'expected.json') };
}

export function duBytes(dir: string): number {
  return Number(spawnSync('du', ['-sb', dir], { encoding: 'utf8' }).stdout.split(/\s/)[0]);
}

/** Bytes free on the file system holding `dir`. */
export function freeBytes(dir: string): number {
  const out = spawnSync('df', ['-B1', '--output=avail', dir], { encoding: 'utf8' }).stdout.trim().split('\n').pop();
  return Number(out);
}

/** Empties the page cache, as after a reboot; false where this process may not (not root). */
export function dropPageCache(): boolean {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

export const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
export const k = (n: number) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));
