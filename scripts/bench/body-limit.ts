/**
 * End to end into a local Synapse with other request sizes and windows than the defaults:
 *   npx tsx scripts/bench/body-limit.ts STORE BYTES[:IN_FLIGHT]...   (ROUNDS=n, default 1)
 * For each, a fresh user: `enable`, then `upload --body-limit BYTES --in-flight N` timed, with its
 * peak RSS (`/usr/bin/time`) and the peaks of `process.memoryUsage()` sampled inside it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalSynapse } from '../../src/devtools/local-synapse.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CLI = path.join(ROOT, 'lib', 'cli.js');
const SAMPLER = path.join(ROOT, 'scripts', 'bench', 'memory-peaks.cjs');
const [store, ...settings] = process.argv.slice(2);
if (!store || settings.length === 0) throw new Error('usage: body-limit.ts STORE BYTES[:IN_FLIGHT]...');

const synapse = await LocalSynapse.start();
try {
  for (let round = 0; round < Number(process.env.ROUNDS ?? 1); round++) {
    for (const setting of settings) {
      const [bytes, inFlight = '2'] = setting.split(':');
      const user = await synapse.registerUser(`body${bytes}_${inFlight}x${Date.now()}`);
      const mig = mkdtempSync(path.join(os.tmpdir(), 'body-limit-'));
      const env = { ...process.env, CRYPTO_STORE_PATH: store, MIGRATION_DIR: mig, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: user.accessToken };
      spawnSync(process.execPath, [CLI, 'enable'], { env });
      const t0 = performance.now();
      const r = spawnSync('/usr/bin/time', ['-f', 'peak RSS %M KB', process.execPath, '--max-semi-space-size=1', '--require', SAMPLER, CLI, 'upload', '--body-limit', bytes!, '--in-flight', inFlight], { env, encoding: 'utf8' });
      const s = (performance.now() - t0) / 1000;
      const m = /uploaded (\d+) keys in (\d+) requests/.exec(r.stdout);
      if (!m) throw new Error(`upload failed: ${r.stderr}`);
      const rss = /peak RSS (\d+) KB/.exec(r.stderr)?.[1];
      const peaks = /memory peaks: (.*)/.exec(r.stderr)?.[1];
      console.log(`${bytes} bytes, ${inFlight} in flight: ${m[1]} keys in ${m[2]} requests, ${s.toFixed(1)} s, ${Math.round(Number(m[1]) / s)} keys/s, peak RSS ${Math.round(Number(rss) / 1024)} MB (${peaks})`);
      rmSync(mig, { recursive: true, force: true });
    }
  }
} finally {
  await synapse.stop();
}
