// Reader + backup encryption through the real binding, output discarded:
// node --max-semi-space-size=1 scripts/bench/encrypt-only.mjs CRYPTO_STORE_PATH → JSON on stdout.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../lib/store/native.js';
import { SessionBatches } from '../../lib/store/sessions.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'bench-encrypt-'));
const key = native().generateBackupKey();
const t0 = performance.now();
const batches = await SessionBatches.open({ cryptoStorePath: process.argv[2], passphrase: '', workDir: work }, { mode: 'backup', backupPublicKey: key.publicKey });
const t1 = performance.now();
let sessions = 0;
for await (const batch of batches) sessions += batch.backup.length;
const t2 = performance.now();
rmSync(work, { recursive: true, force: true });
console.log(JSON.stringify({ sessions, open_s: (t1 - t0) / 1000, scan_s: (t2 - t1) / 1000, sessions_per_s: sessions / ((t2 - t1) / 1000) }));
