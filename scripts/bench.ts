/**
 * npm run bench: every performance figure of docs/benchmarks.md, measured in one run on this
 * machine, and the plot beside it. Stores are genuine (the fixture writer), generated on demand
 * and cached in .cache/bench/; the homeserver is a throwaway local Synapse.
 *
 *   npm run bench                          sizes 10k, 100k, 1M; bloated store 20k sessions × 100 rewrites
 *   npm run bench -- --sizes 10000,100000  other sizes
 *   npm run bench -- --quick               small sizes, to check the harness (does not write docs/)
 *   npm run bench -- --render              rewrite docs/benchmarks.{md,svg} from docs/benchmarks.json (no measuring)
 *   npm run bench -- --postgres            the large run (opt in): long-lived stores of 100k, 1M, 5M sessions
 *                                          (--postgres-sizes), every command, into Synapse on PostgreSQL;
 *                                          --fixed-bodies adds the run with 2 MiB bodies (before/after),
 *                                          stopped after --fixed-budget keys (default 2M)
 *   npm run bench -- --render-postgres     rewrite that section from docs/benchmarks-postgres.json
 *   npm run bench -- --only convert        only `convert` (10k and 100k, or --convert-sizes): rewrites
 *                                          the convert section of docs/benchmarks.md
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalSynapse } from '../src/devtools/local-synapse.js';
import { POSTGRES_END, POSTGRES_START, runPostgresBench, writePostgresSection } from './bench/postgres.js';
import { CACHE, CLI, NODE_FLAGS, ROOMS, ROOT, buildFixtureWriter, dropPageCache, duBytes, fmt, k, lastJson, log, store, timed } from './bench/harness.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const sizes = (flag('--sizes') ?? (quick ? '1000,10000' : '10000,100000,1000000')).split(',').map(Number);
const referenceSizes = (flag('--reference-sizes') ?? (quick ? '1000' : '10000,100000')).split(',').map(Number).filter((n) => sizes.includes(n));
const bloated = { sessions: Number(flag('--bloated-sessions') ?? (quick ? 2000 : 20000)), rewrites: Number(flag('--bloated-rewrites') ?? (quick ? 10 : 100)) };
const convertSizes = (flag('--convert-sizes') ?? (quick ? '1000,10000' : '10000,100000')).split(',').map(Number);
const only = flag('--only');
/** The reference path's upload loop is stopped after this long; its rate is constant (see reference-upload.mjs). */
const REFERENCE_BUDGET_S = Number(flag('--reference-budget-s') ?? (quick ? 20 : 120));


function cargoBuild(): void {
  log('building the benchmark binaries');
  for (const [pkg, example] of [['sled-store', 'scan'], ['megolm-backup', 'x25519_ceiling']]) {
    const r = spawnSync('cargo', ['build', '--release', '--quiet', '-p', pkg!, '--example', example!], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`cargo build ${example} failed`);
  }
  buildFixtureWriter();
}




interface ScanResult {
  keys: number;
  open_s: number;
  total_s: number;
  keys_per_s: number;
  store_bytes: number;
}

const SCAN = path.join(ROOT, 'target', 'release', 'examples', 'scan');

/** x25519_ceiling's output: sessions/s with the generic agreement and with the backup key's table. */
interface Ceiling {
  threads: number;
  sessions_per_s: number;
  table_sessions_per_s: number;
}

const CEILING = path.join(ROOT, 'target', 'release', 'examples', 'x25519_ceiling');

/** Measured right before and right after what it is compared with: this host's speed drifts within minutes. */
function measureCeiling(): Ceiling {
  return lastJson<Ceiling>(spawnSync(CEILING, [quick ? '1' : '4'], { encoding: 'utf8' }).stdout);
}

function meanCeiling(a: Ceiling, b: Ceiling): Ceiling {
  return {
    threads: a.threads,
    sessions_per_s: (a.sessions_per_s + b.sessions_per_s) / 2,
    table_sessions_per_s: (a.table_sessions_per_s + b.table_sessions_per_s) / 2,
  };
}

interface SizeResult {
  sessions: number;
  storeBytes: number;
  /** openOnlyPeakRssMb: recover the store and read one key (absent from runs before 2026-12-02). */
  reader: { sessionsPerS: number; mbPerS: number; openS: number; peakRssMb: number; openOnlyPeakRssMb?: number };
  /** idlePct: the cores' idle share during the scan (absent from runs before 2026-12-02 evening). */
  encrypt: { sessionsPerS: number; peakRssMb: number; ceiling: Ceiling; idlePct?: number | null; shares?: number[] };
  e2e: { sessionsPerS: number; uploadS: number; requests: number; keysPerRequest: number; peakRssMb: number; maxLoopDelayMs: number; p99LoopDelayMs: number; serverCount: number };
  extractPeakRssMb: number;
  /** `verify` after the upload (absent from runs before 2026-12-02). */
  verify?: { peakRssMb: number; s: number };
  reference?: { sessionsPerS: number; uploadSessionsPerS: number; importS: number; uploadS: number; requests: number; keysPerRequest: number; peakRssMb: number; serverCount: number; sent: number; complete: boolean };
}

async function measureSize(synapse: LocalSynapse, sessions: number): Promise<SizeResult> {
  const s = store('many', sessions);
  const storeBytes = duBytes(s.store);
  log(`${sessions} sessions (${(storeBytes / 1e6).toFixed(0)} MB on disk): reader alone (page cache warmed by a first read)`);
  // Warm: whatever ran before (another store, a cold-cache run) decides what a first read finds.
  timed(SCAN, [s.store, ''], () => undefined);
  const reader = timed(SCAN, [s.store, ''], (out) => lastJson<ScanResult>(out));
  const scanS = reader.result.total_s - reader.result.open_s;
  const openOnly = timed(SCAN, [s.store, ''], () => undefined, { SCAN_LIMIT: '1' });

  log(`${sessions}: X25519 ceiling, then reader + backup encryption, output discarded`);
  // Runs between ceilings: each run is compared with the mean of the ceilings right before and
  // right after it (this host's speed drifts within minutes, so one side alone can be off by
  // 10-15%); the run with the median share is reported. Five runs for the stores whose run lasts
  // seconds or less (a third of a second at 10k: one slow moment of the host decides a run),
  // three for the 1M one.
  let before = measureCeiling();
  const pairs = Array.from({ length: sessions <= 100_000 ? 5 : 3 }, () => {
    const run = timed(process.execPath, [...NODE_FLAGS, path.join(ROOT, 'scripts', 'bench', 'encrypt-only.mjs'), s.store], (out) => lastJson<{ sessions_per_s: number; idle_pct: number | null }>(out));
    const after = measureCeiling();
    const ceiling = meanCeiling(before, after);
    before = after;
    return { ceiling, run, share: run.result.sessions_per_s / ceiling.table_sessions_per_s };
  });
  pairs.sort((a, b) => a.share - b.share);
  const shares = pairs.map((p) => p.share);
  const { ceiling, run: encrypt } = pairs[pairs.length >> 1]!;

  log(`${sessions}: extract (peak memory)`);
  const mig0 = mkdtempSync(path.join(os.tmpdir(), 'bench-extract-'));
  const extract = timed(process.execPath, [...NODE_FLAGS, CLI, 'extract', '--crypto-store-path', s.store, '--migration-dir', mig0], () => undefined);
  rmSync(mig0, { recursive: true, force: true });

  log(`${sessions}: end to end into Synapse (enable, then upload timed)`);
  const user = await synapse.registerUser(`ours${sessions}x${Date.now()}`);
  const mig = mkdtempSync(path.join(os.tmpdir(), 'bench-e2e-'));
  const env = { CRYPTO_STORE_PATH: s.store, MIGRATION_DIR: mig, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: user.accessToken };
  timed(process.execPath, [...NODE_FLAGS, CLI, 'enable'], () => undefined, env);
  const delayFile = path.join(mig, 'loop-delay.json');
  const upload = timed(
    process.execPath,
    [...NODE_FLAGS, '--require', path.join(ROOT, 'scripts', 'bench', 'loop-delay.cjs'), CLI, 'upload'],
    (out) => {
      const m = /uploaded (\d+) keys in (\d+) requests .* server count (\d+)/.exec(out);
      if (!m) throw new Error(`unexpected upload output: ${out}`);
      return { sent: Number(m[1]), requests: Number(m[2]), serverCount: Number(m[3]) };
    },
    { ...env, BENCH_LOOP_DELAY_FILE: delayFile },
  );
  const delay = JSON.parse(readFileSync(delayFile, 'utf8')) as { max_ms: number; p99_ms: number };
  log(`${sessions}: verify (every key downloaded, decrypted and compared)`);
  const verify = timed(process.execPath, [...NODE_FLAGS, CLI, 'verify'], (out) => {
    if (!/Status: COMPLETE/.test(out)) throw new Error(`verify did not end complete: ${out}`);
  }, env);
  rmSync(mig, { recursive: true, force: true });

  const result: SizeResult = {
    sessions,
    storeBytes,
    reader: { sessionsPerS: reader.result.keys / scanS, mbPerS: reader.result.store_bytes / 1e6 / scanS, openS: reader.result.open_s, peakRssMb: reader.peakRssMb, openOnlyPeakRssMb: openOnly.peakRssMb },
    encrypt: { sessionsPerS: encrypt.result.sessions_per_s, peakRssMb: encrypt.peakRssMb, ceiling, idlePct: encrypt.result.idle_pct, shares },
    e2e: {
      sessionsPerS: upload.result.sent / upload.wallS,
      uploadS: upload.wallS,
      requests: upload.result.requests,
      keysPerRequest: Math.round(upload.result.sent / upload.result.requests),
      peakRssMb: upload.peakRssMb,
      maxLoopDelayMs: delay.max_ms,
      p99LoopDelayMs: delay.p99_ms,
      serverCount: upload.result.serverCount,
    },
    extractPeakRssMb: extract.peakRssMb,
    verify: { peakRssMb: verify.peakRssMb, s: verify.wallS },
  };

  if (referenceSizes.includes(sessions)) {
    log(`${sessions}: the reference path (wasm OlmMachine import + backupRoomKeys loop)`);
    const refUser = await synapse.registerUser(`ref${sessions}x${Date.now()}`);
    const ref = timed(process.execPath, [path.join(ROOT, 'scripts', 'bench', 'reference-upload.mjs'), s.expected, synapse.baseUrl, refUser.accessToken, String(REFERENCE_BUDGET_S)], (out) =>
      lastJson<{ sessions_per_s: number; upload_sessions_per_s: number; import_s: number; upload_s: number; requests: number; keys_per_request: number; server_count: number; sent: number; complete: boolean }>(out),
    );
    result.reference = {
      sessionsPerS: ref.result.sessions_per_s,
      uploadSessionsPerS: ref.result.upload_sessions_per_s,
      importS: ref.result.import_s,
      uploadS: ref.result.upload_s,
      requests: ref.result.requests,
      keysPerRequest: ref.result.keys_per_request,
      peakRssMb: ref.peakRssMb,
      serverCount: ref.result.server_count,
      sent: ref.result.sent,
      complete: ref.result.complete,
    };
  }
  return result;
}

interface OpenAndScan {
  openS: number;
  scanS: number;
  peakRssMb: number;
}

interface BloatedResult {
  sessions: number;
  rewrites: number;
  storeBytes: number;
  openS: number;
  scanS: number;
  readerPeakRssMb: number;
  /** With the page cache dropped first (absent where that is not allowed, and before 2026-12-02). */
  cold?: OpenAndScan;
  /** The largest store of the run: its size, and its open and scan from a cold page cache. */
  largest?: { sessions: number; storeBytes: number; cold?: OpenAndScan };
}


/** The reader alone on `storeDir`, from a cold page cache; undefined where the cache cannot be dropped. */
function coldScan(storeDir: string): OpenAndScan | undefined {
  if (!dropPageCache()) return undefined;
  const scan = timed(SCAN, [storeDir, ''], (out) => lastJson<ScanResult>(out));
  return { openS: scan.result.open_s, scanS: scan.result.total_s - scan.result.open_s, peakRssMb: scan.peakRssMb };
}

function measureBloated(largestSessions: number): BloatedResult {
  const s = store('bloated', bloated.sessions, ['--rewrites', String(bloated.rewrites)]);
  const storeBytes = duBytes(s.store);
  log(`bloated store (${(storeBytes / 1e9).toFixed(2)} GB for ${bloated.sessions} sessions): open and scan, warm then cold`);
  timed(SCAN, [s.store, ''], () => undefined); // warm, as for the reader alone
  const scan = timed(SCAN, [s.store, ''], (out) => lastJson<ScanResult>(out));
  const cold = coldScan(s.store);
  const big = store('many', largestSessions);
  log(`the ${k(largestSessions)} store: open and scan from a cold page cache`);
  return {
    sessions: bloated.sessions,
    rewrites: bloated.rewrites,
    storeBytes,
    openS: scan.result.open_s,
    scanS: scan.result.total_s - scan.result.open_s,
    readerPeakRssMb: scan.peakRssMb,
    cold,
    largest: { sessions: largestSessions, storeBytes: duBytes(big.store), cold: coldScan(big.store) },
  };
}

interface BackupResult {
  store: string;
  storeBytes: number;
  backup: { s: number; peakRssMb: number };
  cp: { s: number };
  cpSha: { s: number };
}

/** backup against cp -r and cp -r + sha256sum, on the biggest store of the run. */
function measureBackup(sessions: number): BackupResult {
  const s = store('many', sessions);
  const storeBytes = duBytes(s.store);
  const scratch = mkdtempSync(path.join(ROOT, '.cache', 'bench-copies-'));
  const sh = (script: string) => timed('bash', ['-c', script], () => undefined, {}, scratch);
  try {
    log(`backup versus cp -r and cp -r + sha256sum on the ${k(sessions)} store (${(storeBytes / 1e9).toFixed(1)} GB; same disk, page cache warm for all)`);
    spawnSync('sync');
    const cp = sh(`cp -r ${JSON.stringify(s.store)} plain && sync`);
    rmSync(path.join(scratch, 'plain'), { recursive: true, force: true });
    spawnSync('sync');
    const ours = timed(process.execPath, [...NODE_FLAGS, CLI, 'backup', '--crypto-store-path', s.store, '--migration-dir', path.join(scratch, 'mig')], () => undefined);
    rmSync(path.join(scratch, 'mig'), { recursive: true, force: true });
    spawnSync('sync');
    const cpSha = sh(`cp -r ${JSON.stringify(s.store)} hashed && sync && cd hashed && find . -type f -print0 | xargs -0 sha256sum > ../sums`);
    return { store: `many-${sessions}`, storeBytes, backup: { s: ours.wallS, peakRssMb: ours.peakRssMb }, cp: { s: cp.wallS }, cpSha: { s: cpSha.wallS } };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

interface ConvertResult {
  sessions: number;
  storeBytes: number;
  sqliteBytes: number;
  s: number;
  sessionsPerS: number;
  peakRssMb: number;
}

/** `convert` of a copy of the store (it writes the SQLite store beside the Sled one), whole process. */
function measureConvert(sessions: number): ConvertResult {
  const s = store('many', sessions);
  const scratch = mkdtempSync(path.join(ROOT, '.cache', 'bench-convert-'));
  try {
    const copy = path.join(scratch, 'store');
    spawnSync('cp', ['-r', s.store, copy]);
    spawnSync('sync');
    log(`convert of the ${k(sessions)} store`);
    const run = timed(process.execPath, [...NODE_FLAGS, CLI, 'convert', '--crypto-store-path', copy, '--migration-dir', path.join(scratch, 'mig')], (out) => Number(/room keys: (\d+)/.exec(out)?.[1]));
    if (run.result < sessions) throw new Error(`convert carried ${run.result} room keys of ${sessions}`);
    return { sessions, storeBytes: duBytes(s.store), sqliteBytes: duBytes(path.join(copy, 'matrix-sdk-crypto.sqlite3')), s: run.wallS, sessionsPerS: run.result / run.wallS, peakRssMb: run.peakRssMb };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** Sections measured by runs of their own (--postgres, scripts/bench/merge.ts): a default run keeps them. */
const MERGE_START = '<!-- merge:start -->';
const MERGE_END = '<!-- merge:end -->';
function keptSections(): string {
  const file = path.join(ROOT, 'docs', 'benchmarks.md');
  const doc = existsSync(file) ? readFileSync(file, 'utf8') : '';
  return [[MERGE_START, MERGE_END], [POSTGRES_START, POSTGRES_END]]
    .map(([start, end]) => {
      const at = doc.indexOf(start!);
      return at >= 0 ? `\n${doc.slice(at, doc.indexOf(end!) + end!.length)}\n` : '';
    })
    .join('');
}

const CONVERT_START = '<!-- convert:start -->';
const CONVERT_END = '<!-- convert:end -->';

function convertSection(results: ConvertResult[], started: Date): string {
  const rows = results.map((r) => `| ${k(r.sessions)} | ${fmt(r.storeBytes / 1e6)} MB | ${fmt(r.sqliteBytes / 1e6)} MB | ${fmt(r.s, 1)} s | ${fmt(r.sessionsPerS)}/s | ${fmt(r.peakRssMb)} MB |`).join('\n');
  const first = results[0]!;
  const last = results[results.length - 1]!;
  return `${CONVERT_START}
## convert

\`convert\` (the keep-your-device path: Sled → matrix-sdk-sqlite 0.9 through the genuine
matrix-sdk-crypto 0.9), whole process under \`/usr/bin/time\`, on a copy of each store: recovering
the Sled store read-only, reading and decoding every tree, writing the SQLite store in transactions
of 1000, reopening and checking it, the rename. Measured ${started.toISOString().slice(0, 10)}; reproduce with
\`npm run bench -- --only convert\` (or \`--convert-sizes 10000,100000\`).

| sessions | Sled store | SQLite store | wall time | sessions/s | peak RSS |
|---:|---:|---:|---:|---:|---:|
${rows}

Peak RSS ${k(last.sessions)} / ${k(first.sessions)}: **${fmt(last.peakRssMb / first.peakRssMb, 2)}×** for ${fmt(last.sessions / first.sessions)}× the sessions.
${CONVERT_END}`;
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const flags = readFileSync('/proc/cpuinfo', 'utf8');
  const features = ['sha_ni', 'avx2', 'avx512f'].filter((f) => new RegExp(`\\b${f}\\b`).test(flags)).join(', ');
  const disk = spawnSync('df', ['-hT', ROOT], { encoding: 'utf8' }).stdout.trim().split('\n')[1]?.split(/\s+/).slice(0, 2).join(' ') ?? '';
  return `${os.cpus().length} × ${cpu} (${features}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${disk}, Linux ${os.release()}, Node ${process.version}`;
}


function svg(results: SizeResult[]): string {
  const W = 960;
  const H = 360;
  const pad = { l: 70, r: 20, t: 40, b: 50 };
  const panel = (x0: number, title: string, series: { name: string; color: string; values: number[] }[], unit: string) => {
    const w = W / 2 - pad.l - pad.r;
    const h = H - pad.t - pad.b;
    const xs = results.map((r) => Math.log10(r.sessions));
    const [xmin, xmax] = [Math.min(...xs), Math.max(...xs)];
    const ymax = Math.max(...series.flatMap((s) => s.values)) * 1.15 || 1;
    const X = (v: number) => x0 + pad.l + (xmax === xmin ? w / 2 : ((v - xmin) / (xmax - xmin)) * w);
    const Y = (v: number) => pad.t + h - (v / ymax) * h;
    let out = `<text x="${x0 + pad.l}" y="22" font-size="15" font-weight="bold">${title}</text>`;
    out += `<line x1="${x0 + pad.l}" y1="${pad.t + h}" x2="${x0 + pad.l + w}" y2="${pad.t + h}" stroke="#444"/><line x1="${x0 + pad.l}" y1="${pad.t}" x2="${x0 + pad.l}" y2="${pad.t + h}" stroke="#444"/>`;
    for (let i = 0; i <= 4; i++) {
      const v = (ymax / 4) * i;
      out += `<text x="${x0 + pad.l - 6}" y="${Y(v) + 4}" font-size="11" text-anchor="end">${fmt(v)}</text><line x1="${x0 + pad.l}" y1="${Y(v)}" x2="${x0 + pad.l + w}" y2="${Y(v)}" stroke="#ddd"/>`;
    }
    results.forEach((r, i) => (out += `<text x="${X(xs[i]!)}" y="${pad.t + h + 18}" font-size="11" text-anchor="middle">${k(r.sessions)}</text>`));
    out += `<text x="${x0 + pad.l + w / 2}" y="${H - 8}" font-size="12" text-anchor="middle">sessions in the store (log scale)</text>`;
    out += `<text x="${x0 + 16}" y="${pad.t + h / 2}" font-size="12" transform="rotate(-90 ${x0 + 16} ${pad.t + h / 2})" text-anchor="middle">${unit}</text>`;
    series.forEach((s, j) => {
      out += `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.values.map((v, i) => `${X(xs[i]!)},${Y(v)}`).join(' ')}"/>`;
      s.values.forEach((v, i) => (out += `<circle cx="${X(xs[i]!)}" cy="${Y(v)}" r="3" fill="${s.color}"/>`));
      out += `<rect x="${x0 + pad.l + 10}" y="${pad.t + 4 + j * 16}" width="10" height="10" fill="${s.color}"/><text x="${x0 + pad.l + 24}" y="${pad.t + 13 + j * 16}" font-size="11">${s.name}</text>`;
    });
    return out;
  };
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>${panel(
    0,
    'Throughput',
    [
      { name: 'reader alone', color: '#1f77b4', values: results.map((r) => r.reader.sessionsPerS) },
      { name: 'reader + backup encryption', color: '#ff7f0e', values: results.map((r) => r.encrypt.sessionsPerS) },
      { name: 'end to end into Synapse', color: '#2ca02c', values: results.map((r) => r.e2e.sessionsPerS) },
    ],
    'sessions/s',
  )}${panel(
    W / 2,
    'Peak RSS',
    [
      { name: 'upload (end to end)', color: '#2ca02c', values: results.map((r) => r.e2e.peakRssMb) },
      { name: 'extract', color: '#9467bd', values: results.map((r) => r.extractPeakRssMb) },
      ...(results.every((r) => r.verify) ? [{ name: 'verify', color: '#d62728', values: results.map((r) => r.verify!.peakRssMb) }] : []),
      { name: 'reader alone (Rust)', color: '#1f77b4', values: results.map((r) => r.reader.peakRssMb) },
    ],
    'MB',
  )}</svg>\n`;
}

function report(results: SizeResult[], b: BloatedResult, bk: BackupResult, started: Date, seconds: number, machineText: string): string {
  const rows = (cells: string[][]) => cells.map((c) => `| ${c.join(' | ')} |`).join('\n');
  const largest = results[results.length - 1]!;
  const smallest = results[0]!;
  const refRow = results.filter((r) => r.reference);
  const gbs = b.storeBytes / 1e9;
  const bkGb = bk.storeBytes / 1e9;
  const openPerGb = largest.reader.openS / (largest.storeBytes / 1e9);
  const bigCold = b.largest?.cold;
  const bigGb = (b.largest?.storeBytes ?? largest.storeBytes) / 1e9;
  const coldOpenPerGb = bigCold ? bigCold.openS / bigGb : openPerGb;
  const coldScanS = bigCold ? bigCold.scanS : largest.sessions / largest.reader.sessionsPerS;
  return `# Benchmarks

Measured by \`npm run bench\` on ${started.toISOString().slice(0, 10)} in ${fmt(seconds / 60, 1)} minutes, all in one run on one machine:

**Machine:** ${machineText}.

Every store is genuine (written by matrix-sdk-crypto 0.6 / matrix-sdk-sled 0.2 through the fixture
writer, encrypted with the empty passphrase as bot-sdk 0.6.6+ does, ${ROOMS} rooms) and cached in
\`.cache/bench/\`. The homeserver is a local Synapse (pinned, SQLite) on loopback. Peak RSS is
\`/usr/bin/time\`'s maximum resident set of the whole process. Reproduce everything with
\`npm run bench\`; one size with \`npm run bench -- --sizes 100000 --reference-sizes 100000\`.

![throughput and peak RSS against store size](benchmarks.svg)

## Throughput against store size

| sessions | store on disk | reader alone | reader MB/s | reader + encryption | end to end into Synapse | requests (keys/request) |
|---:|---:|---:|---:|---:|---:|---:|
${rows(
  results.map((r) => [
    k(r.sessions),
    `${fmt(r.storeBytes / 1e6)} MB`,
    `${fmt(r.reader.sessionsPerS)}/s`,
    fmt(r.reader.mbPerS),
    `${fmt(r.encrypt.sessionsPerS)}/s`,
    `${fmt(r.e2e.sessionsPerS)}/s`,
    `${r.e2e.requests} (${r.e2e.keysPerRequest})`,
  ]),
)}

- Reader alone: \`target/release/examples/scan STORE\` (sled-store over sled-readonly, no Node, one
  thread walking the tree and decoding every key), scan time without the open (the open, Sled's
  recovery done read-only, is in the bloated-store section), the second of two runs (the page
  cache warm; cold figures are in the bloated-store section too).
- Reader + encryption: \`node scripts/bench/encrypt-only.mjs STORE\`: the real binding in backup
  mode (per session a fresh X25519 ephemeral key, AES-256-CBC, HMAC), batches discarded.
- End to end: \`sled-migration-tool upload\` after \`enable\`, wall time of the whole process
  (start, store open, upload, last checkpoint), request bodies of up to 2 MiB, 2 requests in flight (the defaults).

## The X25519 ceiling

\`cargo run --release -p megolm-backup --example x25519_ceiling\`: per session one fresh ephemeral
key and one key agreement with the backup key on all ${results[0]!.encrypt.ceiling.threads} cores, nothing else, measured right
before and right after each reader + encryption run, the run compared with the mean of the two
(this host's speed drifts within minutes; five runs a size, three for 1M, the median share shown
and the range of all runs beside it), two ways:

- **generic**: x25519-dalek's agreement (a Montgomery ladder per session), what every
  implementation of the backup algorithm does, and what this ceiling measured until 2026-12-01;
- **table**: the agreement the tool now uses: a table of the backup key's multiples, built once
  per run, makes each agreement a fixed-base multiplication (the same shared secret, tested
  against x25519-dalek; \`crates/megolm-backup/src/agreement.rs\`). This is the faster of the two,
  so it is the ceiling to measure against.

| sessions | reader + encryption | cores idle during it | generic ceiling | share | table ceiling | share | range of the runs |
|---:|---:|---:|---:|---:|---:|---:|---:|
${rows(
  results.map((r) => [
    k(r.sessions),
    `${fmt(r.encrypt.sessionsPerS)}/s`,
    r.encrypt.idlePct == null ? '–' : `${fmt(r.encrypt.idlePct, 1)}%`,
    `${fmt(r.encrypt.ceiling.sessions_per_s)}/s`,
    `${fmt((100 * r.encrypt.sessionsPerS) / r.encrypt.ceiling.sessions_per_s)}%`,
    `${fmt(r.encrypt.ceiling.table_sessions_per_s)}/s`,
    `**${fmt((100 * r.encrypt.sessionsPerS) / r.encrypt.ceiling.table_sessions_per_s)}%**`,
    r.encrypt.shares ? `${fmt(100 * r.encrypt.shares[0]!)}–${fmt(100 * r.encrypt.shares.at(-1)!)}%` : '–',
  ]),
)}

On ${results[0]!.encrypt.ceiling.threads} cores everything else a session costs competes with the agreements for the same
cores: the reader (the tree walk, XChaCha20-Poly1305, the store's JSON-in-JSON format), AES-256-CBC,
HMAC, the JSON and base64 of each entry, and the Node main thread taking the batches; the profile
is in \`docs/performance-notes.md\`.

## Against the reference path

The reference path is what the existing tool does: every key in memory, imported into a
matrix-sdk-crypto \`OlmMachine\` (\`@matrix-org/matrix-sdk-crypto-wasm\`), then uploaded with the
machine's \`backupRoomKeys()\` loop, one request at a time (\`scripts/bench/reference-upload.mjs\`),
into the same Synapse in the same run. Each \`backupRoomKeys()\` call scans every session in the
machine's store for the next 100 to send, so its rate does not change over the run; the loop is
stopped after ${REFERENCE_BUDGET_S} s and the whole job's rate computed as import time plus every key at
the measured upload rate (the \`sent\` column says how many keys the measurement covered).

| sessions | ours end to end | reference (import + upload) | reference upload only | sent in the measurement | ours / reference | keys per request ours / reference | peak RSS ours / reference |
|---:|---:|---:|---:|---:|---:|---:|---:|
${rows(
  refRow.map((r) => [
    k(r.sessions),
    `${fmt(r.e2e.sessionsPerS)}/s`,
    `${fmt(r.reference!.sessionsPerS)}/s (import ${fmt(r.reference!.importS, 1)} s)`,
    `${fmt(r.reference!.uploadSessionsPerS)}/s`,
    `${fmt(r.reference!.sent)}${r.reference!.complete ? ' (all)' : ` in ${fmt(r.reference!.uploadS)} s`}`,
    `**${fmt(r.e2e.sessionsPerS / r.reference!.sessionsPerS, 1)}×**`,
    `${r.e2e.keysPerRequest} / ${r.reference!.keysPerRequest}`,
    `${fmt(r.e2e.peakRssMb)} / ${fmt(r.reference!.peakRssMb)} MB`,
  ]),
)}

## Memory

| sessions | upload peak RSS | extract peak RSS | verify peak RSS (time) | reader alone (Rust) | worst event-loop delay in upload (p99) |
|---:|---:|---:|---:|---:|---:|
${rows(results.map((r) => [k(r.sessions), `${fmt(r.e2e.peakRssMb)} MB`, `${fmt(r.extractPeakRssMb)} MB`, r.verify ? `${fmt(r.verify.peakRssMb)} MB (${fmt(r.verify.s, 1)} s)` : 'not measured', `${fmt(r.reader.peakRssMb)} MB`, `${fmt(r.e2e.maxLoopDelayMs)} ms (${fmt(r.e2e.p99LoopDelayMs)} ms)`]))}

Upload peak RSS ${k(largest.sessions)} / ${k(smallest.sessions)}: **${fmt(largest.e2e.peakRssMb / smallest.e2e.peakRssMb, 2)}×**; extract: **${fmt(largest.extractPeakRssMb / smallest.extractPeakRssMb, 2)}×**.
The event-loop delay is measured inside the upload process (\`scripts/bench/loop-delay.cjs\`, preloaded).

${results.length >= 3 ? `From ${k(results[1]!.sessions)} to ${k(largest.sessions)}: upload **${fmt(largest.e2e.peakRssMb / results[1]!.e2e.peakRssMb, 2)}×**, extract **${fmt(largest.extractPeakRssMb / results[1]!.extractPeakRssMb, 2)}×**.\n\n` : ''}What grows, and why (the V8 figures measured once, on 2026-12-01, with \`process.memoryUsage()\`
sampled every 50 ms inside the upload; the open-only figures in this run, \`SCAN_LIMIT=1
target/release/examples/scan STORE ''\` under \`/usr/bin/time\`: recover the store, read one key):

- **The page table.** Recovery keeps, for every page of the store, where its current version and
  the fragments linked onto it lie in the log (\`crates/sled-readonly/src/pages.rs\`), and the scan
  holds one leaf and a few index nodes: opening the ${k(smallest.sessions)} store and reading one key peaks at
  ${fmt(smallest.reader.openOnlyPeakRssMb ?? 0)} MB, the ${k(largest.sessions)} store at ${fmt(largest.reader.openOnlyPeakRssMb ?? 0)} MB; the whole reader alone goes from ${fmt(smallest.reader.peakRssMb)} MB to
  ${fmt(largest.reader.peakRssMb)} MB. Sled's own open, which the tool used until 2026-12-02, built its page table
  with a boxed page and fragment list per page and per-segment sets of page IDs: 5 MB for the 10k
  store and 63 MB for the 1M store before a key was read, which alone kept the 1.5× out of reach.
- **V8's heap: bounded.** V8 lets its old generation grow to up to 4× the live size between full
  collections, and an upload promotes every request body and its entries while they are in flight,
  so the JavaScript heap used to swing between about 20 and 54 MB on long runs. The upload caps
  that growth at 10% (\`--heap-growing-percent\`, set by \`src/pipeline/upload.ts\` for the upload
  only): peak heap 24 / 26 / 29 MB for 10k / 100k / 1M at the same rate.
- **verify: what it must hold grows, by 28 bytes a key.** It checks every key of the store against
  the backup, so it keeps one fingerprint per key until the server's entries are in: natively, in
  28 bytes (\`crates/megolm-backup/src/fingerprint_set.rs\`: 28 MB for 1M keys, 280 MB for 10M),
  plus one room's download at a time, parsed and decrypted natively (about 600 bytes of JSON an
  entry of the largest room).

Against the issue's figures: upload ${k(smallest.sessions)} → ${k(largest.sessions)} **${fmt(largest.e2e.peakRssMb / smallest.e2e.peakRssMb, 2)}×** and extract **${fmt(largest.extractPeakRssMb / smallest.extractPeakRssMb, 2)}×**
(${largest.e2e.peakRssMb / smallest.e2e.peakRssMb <= 1.5 && largest.extractPeakRssMb / smallest.extractPeakRssMb <= 1.5 ? 'within' : '**not** within'} 1.5×), upload at ${k(largest.sessions)} **${fmt(largest.e2e.peakRssMb)} MB** (${largest.e2e.peakRssMb < 300 ? 'under' : '**over**'} 300 MB).

## A bloated store, and the way to 80 GB

A store of ${k(b.sessions)} sessions each written ${b.rewrites + 1} times through the genuine store
(\`fixture-writer --case bloated --rewrites ${b.rewrites}\`): **${fmt(gbs, 2)} GB** on disk, ${fmt(b.storeBytes / b.sessions / 1e3, 1)} KB per live
session against ${fmt(results[0]!.storeBytes / results[0]!.sessions / 1e3, 1)} KB in a store written once: Sled reclaims segments whose data all died, so
rewrites alone do not reproduce the tens of GB some bots reach. The GB-scale figures therefore come
from the ${k(largest.sessions)}-session store as well. Reader alone (\`target/release/examples/scan\`), warm and
after dropping the page cache (\`echo 3 > /proc/sys/vm/drop_caches\`, as after a reboot):

| store | page cache | open (recovery) | open per GB | scan | sessions/s | reader peak RSS |
|---|---|---:|---:|---:|---:|---:|
| bloated, ${fmt(gbs, 2)} GB, ${k(b.sessions)} live | warm | ${fmt(b.openS, 2)} s | ${fmt(b.openS / gbs, 2)} s | ${fmt(b.scanS, 2)} s | ${fmt(b.sessions / b.scanS)} | ${fmt(b.readerPeakRssMb)} MB |
${b.cold ? `| bloated | cold | ${fmt(b.cold.openS, 2)} s | ${fmt(b.cold.openS / gbs, 2)} s | ${fmt(b.cold.scanS, 2)} s | ${fmt(b.sessions / b.cold.scanS)} | ${fmt(b.cold.peakRssMb)} MB |\n` : ''}| ${k(largest.sessions)}, ${fmt(largest.storeBytes / 1e9, 2)} GB | warm | ${fmt(largest.reader.openS, 2)} s | ${fmt(openPerGb, 2)} s | ${fmt(largest.sessions / largest.reader.sessionsPerS, 1)} s | ${fmt(largest.reader.sessionsPerS)} | ${fmt(largest.reader.peakRssMb)} MB |
${bigCold ? `| ${k(largest.sessions)} | cold | ${fmt(bigCold.openS, 2)} s | ${fmt(bigCold.openS / bigGb, 2)} s | ${fmt(bigCold.scanS, 1)} s | ${fmt(largest.sessions / bigCold.scanS)} | ${fmt(bigCold.peakRssMb)} MB |\n` : ''}
The open copies nothing and builds no cache: it reads \`conf\`, the newest snapshot, the 20-byte
header of every segment (one per 512 KiB of log, spread over the whole file) and the log written
after the snapshot (Sled 0.34 writes a snapshot whenever it opens a store, so a store that was
opened since its last writes has little after it). The open's time therefore follows the file's size (its
segment headers); the scan reads live pages only (each leaf's base version and the fragments
linked onto it), so its time follows the live sessions, not the dead versions.

Extrapolation to an 80 GB store${bigCold ? `, from the cold figures of the ${k(largest.sessions)} store` : ''}: the open at
${fmt(coldOpenPerGb, 2)} s/GB takes about **${fmt(coldOpenPerGb * 80, 0)} s**; the scan, about **${fmt((coldScanS * 1e6) / largest.sessions, 0)} s per million live sessions**
it holds, whatever the dead versions around them. The upload is paced by the homeserver, and not
at a rate per million: Synapse counts the whole backup after every request, so its time grows
faster than the keys. The measured law at 100k, 1M and 5M sessions into Synapse on PostgreSQL, and
the 80 GB figure it gives, are in the PostgreSQL section below. Assumptions: a disk like this one (a
virtual disk; a spinning disk would add a seek per segment header and per leaf), Sled's default
segment size (512 KiB), and a snapshot near the end of the log (Sled writes one whenever it opens
the store; a bot killed rather than stopped leaves more log to replay, read at the disk's
sequential speed).

## backup against cp

The ${k(results[results.length - 1]!.sessions)}-session store (${fmt(bkGb, 2)} GB) copied into the same filesystem, each followed by \`sync\`,
page cache warm for all three.

| | time | throughput | ratio |
|---|---:|---:|---:|
| \`sled-migration-tool backup\` (copy + SHA-256 in one pass, fsynced, checksum list, metadata) | ${fmt(bk.backup.s, 1)} s | ${fmt(bkGb / bk.backup.s, 2)} GB/s | 1.00 |
| \`cp -r\` | ${fmt(bk.cp.s, 1)} s | ${fmt(bkGb / bk.cp.s, 2)} GB/s | ours / cp = **${fmt(bk.backup.s / bk.cp.s, 2)}×** |
| \`cp -r\` then \`sha256sum\` of the copy | ${fmt(bk.cpSha.s, 1)} s | ${fmt(bkGb / bk.cpSha.s, 2)} GB/s | ours / (cp + sha256sum) = **${fmt(bk.backup.s / bk.cpSha.s, 2)}×** |

Peak RSS of \`backup\`: ${fmt(bk.backup.peakRssMb)} MB.
`;
}

async function main(): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  if (args.includes('--render-postgres')) {
    writePostgresSection(JSON.parse(readFileSync(path.join(ROOT, 'docs', 'benchmarks-postgres.json'), 'utf8')));
    return;
  }
  if (args.includes('--render')) {
    // The text changed, not the numbers: render the last run's results again.
    const raw = JSON.parse(readFileSync(path.join(ROOT, 'docs', 'benchmarks.json'), 'utf8')) as { started: string; seconds: number; machine: string; results: SizeResult[]; bloated: BloatedResult; backup: BackupResult; convert: ConvertResult[] };
    const at = new Date(raw.started);
    writeFileSync(path.join(ROOT, 'docs', 'benchmarks.svg'), svg(raw.results));
    writeFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), `${report(raw.results, raw.bloated, raw.backup, at, raw.seconds, raw.machine).trimEnd()}\n\n${convertSection(raw.convert, at)}\n${keptSections()}`);
    log('rendered docs/benchmarks.md from docs/benchmarks.json');
    return;
  }
  mkdirSync(CACHE, { recursive: true });
  cargoBuild();
  if (args.includes('--postgres')) {
    // Opt in: hours, tens of GB of stores, and Debian's PostgreSQL (scripts/install-postgres.sh).
    await runPostgresBench((flag('--postgres-sizes') ?? '100000,1000000,5000000').split(',').map(Number), args.includes('--fixed-bodies'), Number(flag('--fixed-budget') ?? 2_000_000), machine());
    return;
  }
  if (only === 'convert') {
    const section = convertSection(convertSizes.map(measureConvert), started);
    const target = quick ? path.join(mkdtempSync(path.join(os.tmpdir(), 'bench-quick-')), 'benchmarks.md') : path.join(ROOT, 'docs', 'benchmarks.md');
    const doc = existsSync(target) ? readFileSync(target, 'utf8') : '';
    const at = doc.indexOf(CONVERT_START);
    const next = at >= 0 ? doc.slice(0, at) + section + doc.slice(doc.indexOf(CONVERT_END) + CONVERT_END.length) : `${doc.trimEnd()}\n\n${section}\n`;
    writeFileSync(target, next);
    log(`wrote ${target}`);
    return;
  }
  const synapse = await LocalSynapse.start();
  const results: SizeResult[] = [];
  try {
    for (const n of sizes) results.push(await measureSize(synapse, n));
  } finally {
    await synapse.stop();
  }
  const b = measureBloated(sizes[sizes.length - 1]!);
  const bk = measureBackup(sizes[sizes.length - 1]!);
  const conversions = convertSizes.map(measureConvert);
  const seconds = (performance.now() - t0) / 1000;
  const raw = { started: started.toISOString(), seconds, machine: machine(), results, bloated: b, backup: bk, convert: conversions };
  const outDir = quick ? mkdtempSync(path.join(os.tmpdir(), 'bench-quick-')) : path.join(ROOT, 'docs');
  writeFileSync(path.join(outDir, 'benchmarks.json'), JSON.stringify(raw, null, 2) + '\n');
  writeFileSync(path.join(outDir, 'benchmarks.svg'), svg(results));
  writeFileSync(path.join(outDir, 'benchmarks.md'), `${report(results, b, bk, started, seconds, machine()).trimEnd()}\n\n${convertSection(conversions, started)}\n${keptSections()}`);
  log(`wrote ${path.join(outDir, 'benchmarks.md')}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
