// Reader + backup encryption through the real binding, output discarded:
// node --max-semi-space-size=1 scripts/bench/encrypt-only.mjs CRYPTO_STORE_PATH → JSON on stdout.
import { native } from '../../lib/store/native.js';
import { SessionBatches } from '../../lib/store/sessions.js';

const key = native().generateBackupKey();
const t0 = performance.now();
const batches = await SessionBatches.open({ cryptoStorePath: process.argv[2], passphrase: '' }, { mode: 'backup', backupPublicKey: key.publicKey });
const t1 = performance.now();
let sessions = 0;
for await (const batch of batches) sessions += batch.backup?.ends.length ?? 0;
const t2 = performance.now();
console.log(JSON.stringify({ sessions, open_s: (t1 - t0) / 1000, scan_s: (t2 - t1) / 1000, sessions_per_s: sessions / ((t2 - t1) / 1000) }));
