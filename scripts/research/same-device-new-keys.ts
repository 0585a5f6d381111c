/**
 * State 1 of issue 22, measured against a real Synapse (the tests' LocalSynapse): the bot's device
 * with the Sled account's keys published and known to a peer, then a NEW Olm account under the SAME
 * device ID uploads its keys, as matrix-bot-sdk 0.8 does on its first start. What does Synapse
 * answer and publish, and what does a matrix-rust-sdk peer (matrix-sdk-crypto-wasm, the tests'
 * oracle) that knew the old keys make of it? Run: npx tsx scripts/research/same-device-new-keys.ts
 * Two variants: the old account's one-time keys still on the server (a bot that ran briefly), and
 * all of them claimed first. Prints one JSON object per variant.
 */
import * as sdk from '@matrix-org/matrix-sdk-crypto-wasm';
import { LocalSynapse, type RegisteredUser } from '../../src/devtools/local-synapse.js';

async function post(synapse: LocalSynapse, token: string, path: string, body: string, method = 'POST') {
  const r = await fetch(`${synapse.baseUrl}/_matrix/client/v3${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
  return { status: r.status, text: await r.text() };
}

/** Sends `m`'s key uploads, queries and claims as a client would; returns what the server answered to uploads. */
async function serve(synapse: LocalSynapse, m: sdk.OlmMachine, token: string): Promise<{ status: number; text: string; body: string }[]> {
  const uploads: { status: number; text: string; body: string }[] = [];
  for (let round = 0; round < 5; round++) {
    const requests = await m.outgoingRequests();
    if (requests.length === 0) break;
    for (const r of requests) {
      const path = r.type === sdk.RequestType.KeysUpload ? '/keys/upload' : r.type === sdk.RequestType.KeysQuery ? '/keys/query' : r.type === sdk.RequestType.KeysClaim ? '/keys/claim' : undefined;
      if (!path) continue;
      const answer = await post(synapse, token, path, r.body);
      if (r.type === sdk.RequestType.KeysUpload) uploads.push({ ...answer, body: r.body });
      if (answer.status === 200) await m.markRequestAsSent(r.id!, r.type, answer.text);
    }
    if (uploads.some((u) => u.status !== 200)) break;
  }
  return uploads;
}

async function published(synapse: LocalSynapse, asker: RegisteredUser, user: string, device: string): Promise<string | undefined> {
  const r = await post(synapse, asker.accessToken, '/keys/query', JSON.stringify({ device_keys: { [user]: [] } }));
  const keys = JSON.parse(r.text).device_keys?.[user]?.[device]?.keys as Record<string, string> | undefined;
  return keys?.[`ed25519:${device}`];
}

async function variant(synapse: LocalSynapse, n: number, claimOldKeysFirst: boolean) {
  const bot = await synapse.registerUser(`statebot${n}`);
  const peerUser = await synapse.registerUser(`statepeer${n}`);
  const botId = new sdk.UserId(bot.userId);
  const device = new sdk.DeviceId(bot.deviceId);

  const oldAccount = await sdk.OlmMachine.initialize(botId, device);
  const oldUpload = await serve(synapse, oldAccount, bot.accessToken);
  const oldEd = oldAccount.identityKeys.ed25519.toBase64();

  const peer = await sdk.OlmMachine.initialize(new sdk.UserId(peerUser.userId), new sdk.DeviceId(peerUser.deviceId));
  await serve(synapse, peer, peerUser.accessToken);
  await peer.updateTrackedUsers([new sdk.UserId(bot.userId)]);
  await serve(synapse, peer, peerUser.accessToken);
  const peerBefore = (await peer.getDevice(new sdk.UserId(bot.userId), new sdk.DeviceId(bot.deviceId)))?.ed25519Key?.toBase64();

  let claimed = 0;
  if (claimOldKeysFirst) {
    for (;;) {
      const r = await post(synapse, peerUser.accessToken, '/keys/claim', JSON.stringify({ one_time_keys: { [bot.userId]: { [bot.deviceId]: 'signed_curve25519' } } }));
      const got = JSON.parse(r.text).one_time_keys?.[bot.userId]?.[bot.deviceId] ?? {};
      const ids = Object.keys(got);
      // Synapse hands out the fallback key once the one-time keys are gone: stop there.
      if (ids.length === 0 || (got[ids[0]!] as { fallback?: boolean }).fallback) break;
      claimed++;
    }
  }

  // matrix-bot-sdk 0.8's first start: a new account for the device ID bot-sdk.json names.
  const newAccount = await sdk.OlmMachine.initialize(new sdk.UserId(bot.userId), new sdk.DeviceId(bot.deviceId));
  const newEd = newAccount.identityKeys.ed25519.toBase64();
  const newUpload = await serve(synapse, newAccount, bot.accessToken);
  const serverNow = await published(synapse, peerUser, bot.userId, bot.deviceId);

  // The peer hears of a device list change (as /sync would tell it) and queries again.
  await peer.markAllTrackedUsersAsDirty();
  await serve(synapse, peer, peerUser.accessToken);
  const peerAfter = (await peer.getDevice(new sdk.UserId(bot.userId), new sdk.DeviceId(bot.deviceId)))?.ed25519Key?.toBase64();
  const describe = (k: string | undefined) => (k === oldEd ? 'old' : k === newEd ? 'new' : String(k));

  // The repair's last step: the old account's signed device keys uploaded again (what a restored
  // account does on start when it is told it has not published them yet).
  const oldDeviceKeys = JSON.parse(oldUpload[0]!.body).device_keys;
  const republish = await post(synapse, bot.accessToken, '/keys/upload', JSON.stringify({ device_keys: oldDeviceKeys }));
  const serverAfterRepublish = await published(synapse, peerUser, bot.userId, bot.deviceId);
  await peer.markAllTrackedUsersAsDirty();
  await serve(synapse, peer, peerUser.accessToken);
  const peerAfterRepublish = (await peer.getDevice(new sdk.UserId(bot.userId), new sdk.DeviceId(bot.deviceId)))?.ed25519Key?.toBase64();
  return {
    variant: claimOldKeysFirst ? 'old one-time keys all claimed first' : 'old one-time keys still on the server',
    old_account_upload: oldUpload.map((u) => u.status),
    old_one_time_keys_claimed: claimed,
    new_account_upload: newUpload.map((u) => `${u.status}${u.status === 200 ? '' : ` ${u.text.slice(0, 160)}`}`),
    server_publishes: describe(serverNow),
    peer_knew: describe(peerBefore),
    peer_after_requery: describe(peerAfter),
    old_keys_republished: republish.status,
    server_publishes_after_republish: describe(serverAfterRepublish),
    peer_after_republish: describe(peerAfterRepublish),
  };
}

await sdk.initAsync();
const synapse = await LocalSynapse.start();
try {
  const synapseVersion = await (await fetch(`${synapse.baseUrl}/_synapse/admin/v1/server_version`)).json().catch(() => ({}));
  const v = sdk.getVersions();
  console.log(JSON.stringify({ synapse: synapseVersion, peer: { matrix_sdk_crypto: v.matrix_sdk_crypto, vodozemac: v.vodozemac } }));
  for (const [i, claim] of [[1, false], [2, true]] as const) console.log(JSON.stringify(await variant(synapse, i, claim)));
} finally {
  await synapse.stop();
}
