// The reference path, as the existing tool does it: every key loaded into memory, imported into a
// matrix-sdk-crypto OlmMachine (@matrix-org/matrix-sdk-crypto-wasm), then uploaded with the
// machine's backupRoomKeys() loop, one request at a time.
// node scripts/bench/reference-upload.mjs EXPECTED_JSON HOMESERVER_URL ACCESS_TOKEN [BUDGET_S] → JSON on stdout.
// Each backupRoomKeys() call scans every session in the machine's store for the next 100 not yet
// backed up, so the upload rate is the same from the first request to the last; with BUDGET_S the
// loop stops after that many seconds and the rate is measured over what was sent by then.
import { readFileSync } from 'node:fs';
import * as sdk from '@matrix-org/matrix-sdk-crypto-wasm';

const [expectedPath, baseUrl, token, budget] = process.argv.slice(2);
const budgetMs = budget ? Number(budget) * 1000 : Infinity;
const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
await sdk.initAsync();
const t0 = performance.now();
const keys = JSON.parse(readFileSync(expectedPath, 'utf8')).keys.map((k) => ({
  algorithm: k.algorithm, room_id: k.room_id, sender_key: k.sender_key, session_id: k.session_id, session_key: k.session_key,
  sender_claimed_keys: k.sender_claimed_keys, forwarding_curve25519_key_chain: k.forwarding_curve25519_key_chain ?? [],
}));
const machine = await sdk.OlmMachine.initialize(new sdk.UserId('@reference:localhost'), new sdk.DeviceId('REFERENCE'));
const imported = await machine.importExportedRoomKeys(JSON.stringify(keys), () => undefined);
const t1 = performance.now();
const backupKey = sdk.BackupDecryptionKey.createRandomKey();
const publicKey = backupKey.megolmV1PublicKey.publicKeyBase64;
const created = await (await fetch(`${baseUrl}/_matrix/client/v3/room_keys/version`, {
  method: 'POST', headers, body: JSON.stringify({ algorithm: 'm.megolm_backup.v1.curve25519-aes-sha2', auth_data: { public_key: publicKey } }),
})).json();
await machine.enableBackupV1(publicKey, created.version);
let requests = 0;
let maxPerRequest = 0;
let sent = 0;
let complete = true;
for (;;) {
  if (performance.now() - t1 > budgetMs) {
    complete = false;
    break;
  }
  const request = await machine.backupRoomKeys();
  if (!request) break;
  const body = JSON.parse(request.body);
  const n = Object.values(body.rooms).reduce((a, r) => a + Object.keys(r.sessions).length, 0);
  maxPerRequest = Math.max(maxPerRequest, n);
  sent += n;
  const r = await fetch(`${baseUrl}/_matrix/client/v3/room_keys/keys?version=${encodeURIComponent(request.version)}`, { method: 'PUT', headers, body: request.body });
  const text = await r.text();
  if (!r.ok) throw new Error(`PUT failed: ${r.status} ${text}`);
  await machine.markRequestAsSent(request.id, request.type, text);
  requests++;
}
const t2 = performance.now();
const count = (await (await fetch(`${baseUrl}/_matrix/client/v3/room_keys/version`, { headers })).json()).count;
console.log(JSON.stringify({
  sessions: keys.length, imported: imported.importedCount, server_count: count, requests, keys_per_request: maxPerRequest, sent, complete,
  import_s: (t1 - t0) / 1000, upload_s: (t2 - t1) / 1000,
  // the whole job's rate: import once, then every key at the measured upload rate
  upload_sessions_per_s: sent / ((t2 - t1) / 1000),
  sessions_per_s: keys.length / ((t1 - t0) / 1000 + keys.length / (sent / ((t2 - t1) / 1000))),
}));
