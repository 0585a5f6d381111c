// Reader + backup encryption through the real binding, output discarded:
// node --max-semi-space-size=1 scripts/bench/encrypt-only.mjs CRYPTO_STORE_PATH → JSON on stdout.
// `idle_pct`: the share of all cores' time the machine spent idle during the scan (Linux, from
// /proc/stat; null elsewhere): what the pipeline left unused on cores it could have had.
import { readFileSync } from 'node:fs';
import { native } from '../../lib/store/native.js';
import { SessionBatches } from '../../lib/store/sessions.js';

function cpuTimes() {
  try {
    // cpu  user nice system idle iowait irq softirq steal …
    return readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  } catch {
    return null;
  }
}

const key = native().generateBackupKey();
const t0 = performance.now();
const batches = await SessionBatches.open({ cryptoStorePath: process.argv[2], passphrase: '' }, { mode: 'backup', backupPublicKey: key.publicKey });
const t1 = performance.now();
const before = cpuTimes();
let sessions = 0;
for await (const batch of batches) sessions += batch.backup?.ends.length ?? 0;
const t2 = performance.now();
const after = cpuTimes();
let idlePct = null;
if (before && after) {
  const d = after.map((v, i) => v - before[i]);
  const total = d.reduce((a, b) => a + b, 0);
  if (total > 0) idlePct = Math.round((1000 * (d[3] + d[4])) / total) / 10;
}
console.log(JSON.stringify({ sessions, open_s: (t1 - t0) / 1000, scan_s: (t2 - t1) / 1000, sessions_per_s: sessions / ((t2 - t1) / 1000), idle_pct: idlePct }));
