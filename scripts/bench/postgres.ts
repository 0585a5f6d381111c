/**
 * npm run bench -- --postgres: the large run. Genuine `long-lived` stores (sessions, one Olm message
 * hash per session, a fifth of the sessions saved twice) of 100k, 1M and 5M sessions
 * (`--postgres-sizes`), each command of the runbook on them from a cold page cache, into a local
 * Synapse on PostgreSQL (src/devtools/local-postgres.ts). Writes the PostgreSQL section of
 * docs/benchmarks.md (between its markers) and docs/benchmarks-postgres.json.
 *
 * Per size: `inspect` (what the store holds), `backup` (where the disk holds a second copy),
 * `extract --skip-errors`, `convert`, `all` (enable → upload → verify) with the upload's progress sampled
 * every second, Synapse's and PostgreSQL's CPU time and PostgreSQL's time per query
 * (pg_stat_statements). `--fixed-bodies` also runs `all` with the request body fixed
 * at 2 MiB (the tool before adaptive bodies) for the before/after.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { LocalSynapse } from '../../src/devtools/local-synapse.js';
import { CACHE, CLI, NODE_FLAGS, ROOMS, ROOT, dropPageCache, duBytes, fmt, freeBytes, k, lastJson, log, store, timed, timedAsync, type Timed } from './harness.js';

export const POSTGRES_START = '<!-- postgres:start -->';
export const POSTGRES_END = '<!-- postgres:end -->';

interface CommandFigures {
  s: number;
  keysPerS: number;
  peakRssMb: number;
  writtenBytes: number;
  cold: boolean;
}

interface QueryTime {
  calls: number;
  totalMs: number;
  meanMs: number;
  query: string;
}

interface UploadRun {
  bodies: 'adaptive' | 'fixed 2 MiB';
  /** Keys acknowledged when the run was stopped (a budgeted "before" run); absent for a whole run. */
  stoppedAfter?: number;
  all: CommandFigures;
  uploadS: number;
  uploadKeysPerS: number;
  verifyS?: number;
  requests?: number;
  serverCount: number;
  /** Keys acknowledged against seconds since the start of `all`, sampled every second. */
  progress: [number, number][];
  /** keys/s over each tenth of the keys, and over each million where there are millions. */
  perTenth: number[];
  perMillion: number[];
  synapseCpuS: number;
  postgresCpuS: number;
  queries: QueryTime[];
  countQuery?: QueryTime;
  /** EXPLAIN ANALYZE of Synapse's count at the end of the upload. */
  countPlan: string;
  finalBodyLimit?: number;
  /** Highest resident set sampled (each second) while uploading, and while verifying. */
  phasePeaks: { uploadMb: number; verifyMb: number };
}

interface LargeResult {
  sessions: number;
  storeBytes: number;
  contents: Record<string, unknown>;
  backup: CommandFigures | { skipped: string };
  extract: CommandFigures;
  uploads: UploadRun[];
  convert: CommandFigures & { sqliteBytes: number };
}

/** CPU seconds (user + system) of a process, and of its children that it has waited for. */
function cpuSeconds(pid: number, withChildren: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14-17 of stat(5), counted from 3 after the command name
    const ticks = Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0);
    return ticks / 100;
  } catch {
    return 0;
  }
}

/** PostgreSQL's CPU: the postmaster, its live backends, and those that have exited. */
function postgresCpu(postmaster: number): number {
  let total = cpuSeconds(postmaster, true);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster) total += cpuSeconds(Number(name), false);
    } catch {
      /* gone */
    }
  }
  return total;
}

function figures(run: Timed<unknown>, keys: number, cold: boolean): CommandFigures {
  return { s: run.wallS, keysPerS: keys / run.wallS, peakRssMb: run.peakRssMb, writtenBytes: run.writtenBytes, cold };
}

/** keys/s between the samples where the acknowledged count crossed each boundary. */
function ratesBetween(progress: [number, number][], boundaries: number[]): number[] {
  const timeAt = (keys: number) => {
    const i = progress.findIndex(([, n]) => n >= keys);
    if (i <= 0) return i === 0 ? progress[0]![0] : NaN;
    // linear between the two samples around the crossing
    const [t0, n0] = progress[i - 1]!;
    const [t1, n1] = progress[i]!;
    return t0 + ((t1 - t0) * (keys - n0)) / (n1 - n0);
  };
  const rates: number[] = [];
  for (let i = 1; i < boundaries.length; i++) rates.push((boundaries[i]! - boundaries[i - 1]!) / (timeAt(boundaries[i]!) - timeAt(boundaries[i - 1]!)));
  return rates;
}

function queryTimes(synapse: LocalSynapse): QueryTime[] {
  const out = synapse.postgres!.query(
    "SELECT calls, total_exec_time, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8",
  );
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [calls, total, mean, ...q] = line.split('|');
      return { calls: Number(calls), totalMs: Number(total), meanMs: Number(mean), query: q.join('|') };
    });
}

/**
 * `all` into a fresh user's backup, its progress sampled every second. `budgetKeys`: the run is
 * stopped once that many keys are acknowledged (the 2 MiB "before" at 5M would take most of an
 * hour; its first millions are compared with the same millions of the adaptive run).
 */
export async function measureAll(synapse: LocalSynapse, storeDir: string, sessions: number, bodies: UploadRun['bodies'], budgetKeys = Infinity): Promise<UploadRun> {
  const user = await synapse.registerUser(`large${sessions}x${Date.now()}`);
  const mig = mkdtempSync(path.join(CACHE, 'run-all-'));
  const pg = synapse.postgres!;
  try {
    const env = { CRYPTO_STORE_PATH: storeDir, MIGRATION_DIR: mig, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: user.accessToken };
    const extra = bodies === 'fixed 2 MiB' ? ['--max-body-limit', String(2 * 1024 * 1024)] : [];
    const cold = dropPageCache();
    pg.query('SELECT pg_stat_statements_reset()');
    const cpu0 = { synapse: cpuSeconds(synapse.pid!, true), postgres: postgresCpu(pg.pid) };
    const progress: [number, number][] = [];
    const t0 = performance.now();
    const stateFile = path.join(mig, 'migration-state.json');
    const readState = () => JSON.parse(readFileSync(stateFile, 'utf8')) as { backup?: { version: string }; upload?: { sessions_acknowledged?: number } };
    log(`${k(sessions)}: all (enable → upload → verify) into Synapse on PostgreSQL, bodies ${bodies}${budgetKeys < sessions ? `, stopped after ${k(budgetKeys)} keys` : ''}${cold ? ', page cache dropped' : ''}`);
    // Resident set sampled each second: the highest while uploading and while verifying.
    const phasePeaks = { uploadMb: 0, verifyMb: 0 };
    let uploaded = false;
    const run = await timedAsync(process.execPath, [...NODE_FLAGS, CLI, 'all', '--json', ...extra], (out) => lastJson<Record<string, unknown>>(out), env, (stop, rssMb) => {
      const rss = rssMb() ?? 0;
      if (uploaded) phasePeaks.verifyMb = Math.max(phasePeaks.verifyMb, rss);
      else phasePeaks.uploadMb = Math.max(phasePeaks.uploadMb, rss);
      try {
        const n = readState().upload?.sessions_acknowledged ?? 0;
        progress.push([(performance.now() - t0) / 1000, n]);
        uploaded = n >= sessions;
        if (n >= budgetKeys) stop();
      } catch {
        /* not written yet, or being renamed */
      }
    });
    const cpu1 = { synapse: cpuSeconds(synapse.pid!, true), postgres: postgresCpu(pg.pid) };
    const out = run.result as { upload: { sent: number; requests: number; server_count: number; final_body_limit: number }; verify: { status: string } } | undefined;
    if (out && out.verify.status !== 'COMPLETE') throw new Error(`verify did not end complete: ${JSON.stringify(out)}`);
    const version = readState().backup!.version;
    const acknowledged = progress.length ? progress[progress.length - 1]![1] : 0;
    const sent = out?.upload.sent ?? acknowledged;
    const done = out ? (progress.find(([, n]) => n >= sent)?.[0] ?? run.wallS) : progress[progress.length - 1]![0];
    const tenths = Array.from({ length: 11 }, (_, i) => Math.round((sent * i) / 10));
    const millions = sent >= 2e6 ? Array.from({ length: Math.floor(sent / 1e6) + 1 }, (_, i) => i * 1e6) : [];
    const queries = queryTimes(synapse);
    // The count as Synapse runs it, once more, with PostgreSQL's plan and timing.
    const countPlan = pg.query(`EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = '${user.userId}' AND version = '${version}'`);
    // The next run starts from the same table: this backup deleted (as Synapse does it) and its space reusable.
    await synapse.deleteBackup(user.accessToken, version);
    pg.query('VACUUM e2e_room_keys');
    return {
      bodies,
      stoppedAfter: out ? undefined : acknowledged,
      all: figures(run, sessions, cold),
      uploadS: done,
      uploadKeysPerS: sent / done,
      verifyS: out ? run.wallS - done : undefined,
      requests: out?.upload.requests,
      serverCount: out?.upload.server_count ?? acknowledged,
      progress,
      perTenth: out ? ratesBetween(progress, tenths) : [],
      perMillion: millions.length ? ratesBetween(progress, millions) : [],
      synapseCpuS: cpu1.synapse - cpu0.synapse,
      postgresCpuS: cpu1.postgres - cpu0.postgres,
      queries,
      countQuery: queries.find((q) => /SELECT COUNT\(\*\) FROM e2e_room_keys/i.test(q.query)),
      countPlan,
      finalBodyLimit: out?.upload.final_body_limit,
      phasePeaks,
    };
  } finally {
    rmSync(mig, { recursive: true, force: true });
  }
}

/** `convert` writes the SQLite store into the crypto store's folder: a folder of its own that
 * links to the Sled database (read only, never written) and copies bot-sdk.json, so a store of
 * tens of GB is not copied first. */
function measureConvert(storeDir: string, sessions: number): LargeResult['convert'] {
  const scratch = mkdtempSync(path.join(CACHE, 'run-convert-'));
  try {
    const folder = path.join(scratch, 'store');
    mkdirSync(folder);
    symlinkSync(path.join(storeDir, 'matrix-sdk-crypto'), path.join(folder, 'matrix-sdk-crypto'));
    copyFileSync(path.join(storeDir, 'bot-sdk.json'), path.join(folder, 'bot-sdk.json'));
    const cold = dropPageCache();
    log(`${k(sessions)}: convert${cold ? ', page cache dropped' : ''}`);
    const run = timed(process.execPath, [...NODE_FLAGS, CLI, 'convert', '--json', '--crypto-store-path', folder, '--migration-dir', path.join(scratch, 'mig')], (out) => lastJson<{ distinct_room_keys: number }>(out));
    if (run.result.distinct_room_keys < sessions) throw new Error(`convert carried ${run.result.distinct_room_keys} room keys of ${sessions}`);
    return { ...figures(run, sessions, cold), sqliteBytes: duBytes(path.join(folder, 'matrix-sdk-crypto.sqlite3')) };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function measureLarge(synapse: LocalSynapse, sessions: number, fixedToo: boolean, fixedBudget: number): Promise<LargeResult> {
  const s = store('long-lived', sessions);
  const storeBytes = duBytes(s.store);
  log(`${k(sessions)} sessions, ${fmt(storeBytes / 1e9, 1)} GB: inspect`);
  const contents = timed(process.execPath, [...NODE_FLAGS, CLI, 'inspect', '--json', '--crypto-store-path', s.store, '--migration-dir', CACHE], (out) => lastJson<Record<string, unknown>>(out)).result;

  let backup: LargeResult['backup'];
  const free = freeBytes(CACHE);
  if (free > storeBytes * 1.05 + 8e9) {
    const mig = mkdtempSync(path.join(CACHE, 'run-backup-'));
    try {
      const cold = dropPageCache();
      log(`${k(sessions)}: backup${cold ? ', page cache dropped' : ''}`);
      backup = figures(timed(process.execPath, [...NODE_FLAGS, CLI, 'backup', '--crypto-store-path', s.store, '--migration-dir', mig], () => undefined), sessions, cold);
    } finally {
      rmSync(mig, { recursive: true, force: true });
    }
  } else {
    backup = { skipped: `a second copy (${fmt(storeBytes / 1e9, 1)} GB) does not fit in the ${fmt(free / 1e9, 1)} GB free` };
    log(`${k(sessions)}: backup skipped: ${backup.skipped}`);
  }

  const mig = mkdtempSync(path.join(CACHE, 'run-extract-'));
  let extract: CommandFigures;
  try {
    const cold = dropPageCache();
    log(`${k(sessions)}: extract --skip-errors${cold ? ', page cache dropped' : ''}`);
    extract = figures(timed(process.execPath, [...NODE_FLAGS, CLI, 'extract', '--skip-errors', '--crypto-store-path', s.store, '--migration-dir', mig], () => undefined), sessions, cold);
  } finally {
    rmSync(mig, { recursive: true, force: true });
  }

  // convert before the uploads: its SQLite store (about 9 GB at 5M) is gone before PostgreSQL's tables grow.
  const convert = measureConvert(s.store, sessions);
  const uploads = [await measureAll(synapse, s.store, sessions, 'adaptive')];
  if (fixedToo) uploads.push(await measureAll(synapse, s.store, sessions, 'fixed 2 MiB', fixedBudget));
  return { sessions, storeBytes, contents, backup, extract, uploads, convert };
}

export async function runPostgresBench(sizes: number[], fixedToo: boolean, fixedBudget: number, machine: string): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  mkdirSync(CACHE, { recursive: true });
  const synapse = await LocalSynapse.start({ database: 'postgres' });
  const results: LargeResult[] = [];
  try {
    for (const n of sizes) {
      results.push(await measureLarge(synapse, n, fixedToo, fixedBudget));
      // Each size's figures on disk as soon as they exist: a run of hours should not lose them.
      writeFileSync(path.join(ROOT, 'docs', 'benchmarks-postgres.json'), JSON.stringify({ started: started.toISOString(), machine, results }, null, 2) + '\n');
    }
  } finally {
    await synapse.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  const raw = { started: started.toISOString(), seconds, machine, results };
  writeFileSync(path.join(ROOT, 'docs', 'benchmarks-postgres.json'), JSON.stringify(raw, null, 2) + '\n');
  writePostgresSection(raw);
}

export function writePostgresSection(raw: { started: string; seconds?: number; machine: string; results: LargeResult[] }): void {
  const file = path.join(ROOT, 'docs', 'benchmarks.md');
  const doc = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const section = postgresSection(raw);
  const at = doc.indexOf(POSTGRES_START);
  const next = at >= 0 ? doc.slice(0, at) + section + doc.slice(doc.indexOf(POSTGRES_END) + POSTGRES_END.length) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, next);
  log(`wrote the PostgreSQL section of ${file}`);
}

/** A key's share of a request body: 2 MiB bodies hold 2,326 keys. */
const BODY_BYTES_PER_KEY = 2 * 1048576 / 2326;
const gb = (bytes: number) => `${fmt(bytes / 1e9, 1)} GB`;

/** The count's cost per key already in the backup (µs), from its mean time over a whole upload
 * (the backup holds, on average, half the keys while it is counted). */
function countMicrosPerKey(u: UploadRun, keys: number): number | undefined {
  return u.countQuery ? (u.countQuery.meanMs * 1000) / (keys / 2) : undefined;
}

function commandRow(name: string, sessions: number, f: CommandFigures | { skipped: string }): string {
  if ('skipped' in f) return `| ${k(sessions)} | ${name} | skipped: ${f.skipped} | | | |`;
  return `| ${k(sessions)} | ${name} | ${fmt(f.s, 1)} s | ${fmt(f.keysPerS)} | ${fmt(f.peakRssMb)} MB | ${gb(f.writtenBytes)} |`;
}

function postgresSection(raw: { started: string; seconds?: number; machine: string; results: LargeResult[] }): string {
  const rs = raw.results;
  const small = rs[0]!;
  const large = rs[rs.length - 1]!;
  const adaptive = (r: LargeResult) => r.uploads.find((u) => u.bodies === 'adaptive')!;
  const fixed = (r: LargeResult) => r.uploads.find((u) => u.bodies === 'fixed 2 MiB');
  const contents = (r: LargeResult) => r.contents as { counts?: Record<string, { entries: number }> };
  const olmHashes = (r: LargeResult) => contents(r).counts?.olm_hashes?.entries ?? 0;
  const lines: string[] = [];
  lines.push(POSTGRES_START, '## Millions of keys into Synapse on PostgreSQL', '');
  lines.push(`Measured by \`npm run bench -- --postgres --fixed-bodies\` on ${raw.started.slice(0, 10)}${raw.seconds ? ` in ${fmt(raw.seconds / 60)} minutes` : ''}, one run, one machine: ${raw.machine}.`);
  lines.push('');
  lines.push(`Stores: the fixture writer's \`long-lived\` case (genuine matrix-sdk-crypto 0.6 / matrix-sdk-sled 0.2, empty passphrase, ${ROOMS} rooms): every session with the Olm message hash its \`m.room_key\` left, and every fifth session saved a second time a chunk later, as a bot that ran for years holds them. Homeserver: Synapse ${synapseVersion()} on PostgreSQL 15 (Debian's; a throwaway cluster on a Unix socket, \`shared_buffers=1GB\`, \`fsync=off\`, pg_stat_statements), each size into a fresh user, each backup deleted and the table vacuumed after its run. The page cache was dropped before every command (\`echo 3 > /proc/sys/vm/drop_caches\`). Peak RSS and bytes written: \`/usr/bin/time\` (%M, %O) of the whole CLI process.`);
  lines.push('', '| sessions | store on disk | Olm message hashes | store written per session |', '|---:|---:|---:|---:|');
  for (const r of rs) lines.push(`| ${k(r.sessions)} | ${gb(r.storeBytes)} | ${fmt(olmHashes(r))} | ${fmt(r.storeBytes / r.sessions / 1e3, 1)} KB |`);
  lines.push('', '### Every command', '', '| sessions | command | wall | keys/s | peak RSS | written |', '|---:|---|---:|---:|---:|---:|');
  for (const r of rs) {
    lines.push(commandRow('backup', r.sessions, r.backup));
    lines.push(commandRow('extract --skip-errors', r.sessions, r.extract));
    lines.push(commandRow('all (enable → upload → verify)', r.sessions, adaptive(r).all));
    lines.push(commandRow('convert', r.sessions, r.convert));
  }
  lines.push('', 'Peak RSS against the 100k store (the issue: within 1.5×; `all` includes verify, which may add its 28 bytes a key):', '');
  lines.push('| command | ' + rs.map((r) => k(r.sessions)).join(' | ') + ` | ${k(large.sessions)} / ${k(small.sessions)} | allowed |`, '|---|' + rs.map(() => '---:|').join('') + '---:|---:|');
  const rssRow = (name: string, get: (r: LargeResult) => number | undefined, extra = 0) => {
    const v = rs.map(get);
    // The largest size this command ran at (backup is skipped where a second copy does not fit).
    const last = v.reduce<number>((at, x, i) => (x === undefined ? at : i), 0);
    const ratio = v[last]! / v[0]!;
    const allowed = 1.5 * v[0]! + extra;
    const at = last < v.length - 1 ? ` (at ${k(rs[last]!.sessions)})` : '';
    lines.push(`| ${name} | ${v.map((x) => (x === undefined ? '–' : `${fmt(x)} MB`)).join(' | ')} | ${fmt(ratio, 2)}×${at} | ${fmt(allowed)} MB (${v[last]! <= allowed ? 'within' : '**over**'}) |`);
  };
  rssRow('backup', (r) => ('skipped' in r.backup ? undefined : r.backup.peakRssMb));
  rssRow('extract --skip-errors', (r) => r.extract.peakRssMb);
  rssRow('all', (r) => adaptive(r).all.peakRssMb, (28 * large.sessions) / 1e6);
  rssRow('all, while uploading (sampled each second)', (r) => adaptive(r).phasePeaks.uploadMb);
  rssRow('all, while verifying (sampled each second)', (r) => adaptive(r).phasePeaks.verifyMb, (28 * large.sessions) / 1e6);
  rssRow('convert', (r) => r.convert.peakRssMb);
  lines.push('', 'What grows with the store is the reader\'s table of where each of Sled\'s pages lies in the log, which the open builds and every command that reads the store holds: 4 bytes a page, where to read it again in the snapshot or the log, about 1 byte a session of these stores (the reader alone, `/usr/bin/time target/release/examples/scan STORE \'\'`: 3.4 MB at 100k, 4.9 MB at 1M, 10.2 MB at 5M; 4.5 / 13.5 / 54 MB when it kept every page\'s fragments, 6 / 39 / 189 MB before that). verify adds its fingerprints (28 bytes a key, sorted in place); the upload\'s request bodies grow to 12 MiB where the count makes it pay and are built in buffers used again. docs/performance-notes.md (issue 24) has the breakdown.');

  lines.push('', '### The upload as the backup grows', '');
  lines.push('Rates from the acknowledged count in `migration-state.json`, sampled every second. Synapse answers every upload with the number of keys in the backup, which it counts anew under the user\'s upload lock; its time is PostgreSQL\'s own (pg_stat_statements).', '');
  lines.push('| sessions | bodies | upload | keys/s | requests (final body limit) | count: calls, mean, share of the upload | Synapse CPU | PostgreSQL CPU | keys/s per tenth of the upload |', '|---:|---|---:|---:|---:|---:|---:|---:|---|');
  for (const r of rs) {
    for (const u of r.uploads) {
      const count = u.countQuery ? `${fmt(u.countQuery.calls)}, ${fmt(u.countQuery.meanMs)} ms, ${fmt((u.countQuery.totalMs / 1000 / u.uploadS) * 100)}%` : '–';
      const limit = u.finalBodyLimit ? ` (${fmt(u.finalBodyLimit / 1048576, 1)} MiB)` : '';
      const stopped = u.stoppedAfter !== undefined ? ` (stopped after ${k(Math.round(u.stoppedAfter / 1e5) * 1e5)})` : '';
      lines.push(`| ${k(r.sessions)} | ${u.bodies}${stopped} | ${fmt(u.uploadS)} s | ${fmt(u.uploadKeysPerS)} | ${u.requests === undefined ? '–' : fmt(u.requests)}${limit} | ${count} | ${fmt(u.synapseCpuS)} s | ${fmt(u.postgresCpuS)} s | ${u.perTenth.map((x) => fmt(x / 1000, 1) + 'k').join(' ')} |`);
    }
  }
  const series = rs.filter((r) => r.uploads.some((u) => u.perMillion.length));
  if (series.length) {
    lines.push('', 'Per million keys (keys/s), the same run:', '');
    for (const r of series) for (const u of r.uploads) if (u.perMillion.length) lines.push(`- ${k(r.sessions)}, ${u.bodies}: ${u.perMillion.map((x, i) => `${i}–${i + 1}M ${fmt(x)}`).join(', ')}`);
  }

  // The end-to-end rate at the largest size against the smallest, as the issue asks.
  const e2e = (r: LargeResult) => adaptive(r).all.keysPerS;
  const up = (r: LargeResult) => adaptive(r).uploadKeysPerS;
  lines.push('', '### Against the 100k store, and the law', '');
  lines.push(`End to end (\`all\`, enable → upload → verify, wall time of the process): ${k(small.sessions)} **${fmt(e2e(small))} keys/s**, ${k(large.sessions)} **${fmt(e2e(large))} keys/s**: **${fmt(e2e(large) / e2e(small), 2)}×** (the issue asks for at least 0.5×). Upload alone: ${fmt(up(small))} → ${fmt(up(large))} keys/s (${fmt(up(large) / up(small), 2)}×).`);
  const micros = rs.map((r) => countMicrosPerKey(adaptive(r), r.sessions)).filter((x): x is number => x !== undefined);
  const largeCount = adaptive(large).countQuery;
  if (largeCount) {
    const countS = largeCount.totalMs / 1000;
    const rest = adaptive(large).uploadS - countS;
    const perKeyUs = (rest / large.sessions) * 1e6;
    const cUs = countMicrosPerKey(adaptive(large), large.sessions)!;
    const limitKeys = (adaptive(large).finalBodyLimit ?? 2 * 1048576) / BODY_BYTES_PER_KEY;
    lines.push('');
    const outside = rs.map((r) => ((adaptive(r).uploadS - (adaptive(r).countQuery?.totalMs ?? 0) / 1000) / r.sessions) * 1e6);
    lines.push(`The law. Everything but the count costs about the same per key at every size: ${outside.map((x) => `${fmt(x)} µs`).join(' / ')} a key outside the count (${rs.map((r) => k(r.sessions)).join(' / ')}; the smallest run carries the start of the process). The count costs ${micros.map((x) => fmt(x, 2)).join(' / ')} µs per key already in the backup (mean count time over half the keys; PostgreSQL ran it as an index scan while other users' rows filled most of the table, as a parallel sequential scan once this user's rows did), so with requests of B keys an upload of N keys spends about c·N²/(2B) in it: quadratic in N, and B is what our side controls. Adaptive bodies grow B while the count dominates, up to the ceiling (${fmt((adaptive(large).finalBodyLimit ?? 0) / 1048576, 1)} MiB here, about ${fmt(limitKeys)} keys); past that point the upload is linear plus c·N²/(2·B_max).`);
    // 80 GB: sessions at this store's bytes per session, time from the law.
    const n80 = 80e9 / (large.storeBytes / large.sessions);
    const t80 = n80 * perKeyUs * 1e-6 + (cUs * 1e-6 * n80 * n80) / (2 * limitKeys);
    const verifyPerKey = (adaptive(large).verifyS ?? 0) / large.sessions;
    lines.push('');
    lines.push(`Extrapolated to an 80 GB store of this kind (${fmt(large.storeBytes / large.sessions / 1e3, 1)} KB per session: about ${fmt(n80 / 1e6, 1)}M sessions): upload ≈ ${fmt(n80 * perKeyUs * 1e-6 / 60)} min of per-key work + ${fmt((cUs * 1e-6 * n80 * n80) / (2 * limitKeys) / 60)} min of counts = **${fmt(t80 / 60)} min**; verify ≈ ${fmt((verifyPerKey * n80) / 60)} min at the measured ${fmt(verifyPerKey * 1e6)} µs a key (linear: one download per room). Assumptions: the same per-key costs (a disk, CPU and PostgreSQL like these; the per-key part was flat over the run), the count as linear in the backup as measured, bodies at the ceiling from early on, and a server with the user's rows alone in \`e2e_room_keys\` (on a shared server the count uses the index on \`(user_id, version, room_id, session_id)\` and reads only the user's rows, at a different constant).`);
  }
  lines.push('', 'The count\'s plan at the end of the largest upload (EXPLAIN ANALYZE of the statement Synapse runs):', '', '```', (adaptive(large).countPlan ?? '').trim(), '```');
  const before = fixed(large);
  if (before) {
    const a = adaptive(large);
    const n = before.stoppedAfter ?? large.sessions;
    const at = (u: UploadRun) => {
      const i = u.progress.findIndex(([, x]) => x >= n);
      return i >= 0 ? u.progress[i]![0] : NaN;
    };
    lines.push('', `Before/after at ${k(large.sessions)}, same run: the first ${k(Math.round(n / 1e5) * 1e5)} keys took ${fmt(at(before))} s with 2 MiB bodies and ${fmt(at(a))} s with adaptive bodies (before / after: **${fmt(at(before) / at(a), 2)}×**).`);
  }
  lines.push(POSTGRES_END);
  return lines.join('\n');
}

function synapseVersion(): string {
  const r = spawnSync(LocalSynapse.venvPython(), ['-c', 'import synapse; print(synapse.__version__)'], { encoding: 'utf8' });
  return r.stdout.trim().split(' ')[0] || 'unknown';
}
