/**
 * Issue 22, State 1 end to end against the real Synapse: the bot's device published with the Sled
 * account's keys and known to a peer (matrix-sdk-crypto-wasm); then matrix-bot-sdk 0.8's first
 * start (a NEW matrix-sdk-crypto 0.9 account under the same device ID uploads its keys and holds a
 * room key of its own); then the repair as the operator runs it (`convert --force`); then the bot's
 * 0.9 machine on its next start, the keys the server publishes, and a new room key from the peer
 * over Olm. The bot side is the genuine 0.9 machine over the SQLite store (test/helpers/bot-machine.ts).
 */
import anyTest, { type TestFn } from 'ava';
import { promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { botMachine } from './helpers/bot-machine.js';
import { runCli } from './helpers/cli.js';
import { committedFixture, copyFixture, treeHashes } from './helpers/fixtures.js';
import { api, loginAsDevice, useSynapse, type WithSynapse } from './helpers/homeserver.js';
import { initOracle, sdk } from './helpers/oracle.js';
import { openAsTheBot } from './helpers/upgraded-bot.js';

const test = anyTest as TestFn<WithSynapse>;
useSynapse(test, { serverName: 'example.org' });

test('state 1: after convert --force the server publishes the old keys again, a peer that knew the device shares a new room key over Olm, and every key of both accounts decrypts', async (t) => {
  await initOracle();
  const { synapse } = t.context;
  const fixture = committedFixture('plain');
  const { user_id: botUser, device_id: device } = fixture.expected;
  const oldEd = fixture.expected.identity_keys!.ed25519;
  const bot = await synapse.registerUser('bot');
  t.is(await loginAsDevice(synapse, bot, device), device);
  const botToken = (await synapse.login(bot, device)).accessToken;
  const peerUser = await synapse.registerUser('peer');
  const tmp: string[] = [];
  t.teardown(async () => {
    for (const d of tmp) await fs.rm(d, { recursive: true, force: true });
  });
  const world = async () => {
    const f = copyFixture(fixture);
    const mig = await fs.mkdtemp(path.join(os.tmpdir(), 'state1-'));
    tmp.push(f.dir, mig);
    return { f, env: { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, STORE_PASSPHRASE: '' } };
  };
  const published = async () => {
    const r = await api<{ device_keys: Record<string, Record<string, { keys: Record<string, string> }>> }>(synapse, peerUser.accessToken, 'POST', '/_matrix/client/v3/keys/query', { device_keys: { [botUser]: [] } });
    return r.json.device_keys[botUser]?.[device]?.keys[`ed25519:${device}`];
  };

  // 1. The bot on the Sled account: its keys published as the old bot had (its signed device keys,
  // from the account converted by the genuine 0.9 code).
  const before = await world();
  t.is((await runCli(['convert'], before.env)).code, 0);
  const oldBot = await botMachine(synapse.baseUrl, botToken, before.f.store, botUser);
  t.is((await oldBot.call({ op: 'keys' })).ed25519, oldEd);
  t.is((await api(synapse, botToken, 'POST', '/_matrix/client/v3/keys/upload', { device_keys: await oldBot.call({ op: 'device_keys' }) })).status, 200);
  await oldBot.publish();
  await oldBot.close();
  t.is(await published(), oldEd);

  // 2. A peer queries the bot and knows the device with the old keys.
  const peer = await sdk.OlmMachine.initialize(new sdk.UserId(peerUser.userId), new sdk.DeviceId(peerUser.deviceId));
  const peerHttp = async (method: string, p: string, body: string) => {
    const r = await fetch(`${synapse.baseUrl}/_matrix/client/v3${p}`, { method, headers: { authorization: `Bearer ${peerUser.accessToken}`, 'content-type': 'application/json' }, body });
    t.is(r.status, 200, `${p}`);
    return r.text();
  };
  const servePeer = async () => {
    for (let round = 0; round < 5; round++) {
      const requests = await peer.outgoingRequests();
      if (requests.length === 0) return;
      for (const r of requests) {
        const p = r.type === sdk.RequestType.KeysUpload ? '/keys/upload' : r.type === sdk.RequestType.KeysQuery ? '/keys/query' : undefined;
        if (p) await peer.markRequestAsSent(r.id!, r.type, await peerHttp('POST', p, r.body));
      }
    }
  };
  await servePeer();
  await peer.updateTrackedUsers([new sdk.UserId(botUser)]);
  await servePeer();
  const peerKnows = async () => (await peer.getDevice(new sdk.UserId(botUser), new sdk.DeviceId(device)))?.ed25519Key?.toBase64();
  t.is(await peerKnows(), oldEd);

  // 3. matrix-bot-sdk 0.8's first start beside the Sled store: a new account under the same device
  // ID uploads its keys (the server now publishes them) and holds a room key of its own.
  const upgraded = await world();
  const newBot = await botMachine(synapse.baseUrl, botToken, upgraded.f.store, botUser);
  const newEd = (await newBot.call({ op: 'keys' })).ed25519 as string;
  t.not(newEd, oldEd);
  const newUpload = await newBot.publish();
  const own = await newBot.call({ op: 'own_room_key', room: '!upgraded:example.org', text: 'said by the new account' });
  await newBot.close();
  t.is(await published(), newEd, `the new account's uploads: ${newUpload.join(', ')}`);

  // 4. The repair, as the operator runs it.
  const sled = treeHashes(path.join(upgraded.f.store, 'matrix-sdk-crypto'));
  // With the homeserver and the bot's token: convert also claims the one-time keys the new account
  // left on the server (signed by its key: a peer claiming one would refuse it and withhold the
  // room key, as measured before this step existed).
  const repair = await runCli(['convert', '--force', '--json'], { ...upgraded.env, HOMESERVER_URL: synapse.baseUrl, ACCESS_TOKEN: botToken });
  t.is(repair.code, 0, repair.stderr);
  t.regex(repair.stdout + repair.stderr, /restored the old account/);
  t.deepEqual(treeHashes(path.join(upgraded.f.store, 'matrix-sdk-crypto')), sled, 'the Sled store is unchanged');
  t.truthy(readdirSync(upgraded.f.store).find((e) => e.startsWith('matrix-sdk-crypto.sqlite3.before-convert-')));

  // 5. The store opens as the device with the old keys and every key of both accounts; on its next
  // start the bot publishes the old keys again.
  const n = fixture.expected.keys.length;
  t.like(await openAsTheBot(upgraded.f.store), { user_id: botUser, device_id: device, ed25519: oldEd, room_keys: n + 1 });
  t.regex(repair.stderr, /claimed the \d+ one-time keys that account left there/);
  t.true((JSON.parse(repair.stdout) as { stale_one_time_keys_claimed: number }).stale_one_time_keys_claimed > 0, 'the new account left one-time keys on the server');
  const restored = await botMachine(synapse.baseUrl, botToken, upgraded.f.store, botUser);
  t.teardown(() => restored.close());
  const republish = await restored.publish();
  t.true(republish.length > 0 && republish[0] === 200, `the restored account's uploads: ${republish.join(', ')}`);
  t.is(await published(), oldEd, 'the server publishes the old keys again');

  // The peer that knew the device hears of a change, queries, still holds the old keys, claims a
  // one-time key and shares a new room key over Olm; the bot takes it and decrypts a message.
  await peer.markAllTrackedUsersAsDirty();
  await servePeer();
  t.is(await peerKnows(), oldEd);
  const claim = await peer.getMissingSessions([new sdk.UserId(botUser)]);
  t.truthy(claim, 'the peer has no Olm session with the bot yet');
  await peer.markRequestAsSent(claim!.id, claim!.type, await peerHttp("POST", "/keys/claim", claim!.body));
  const room = new sdk.RoomId('!after-repair:example.org');
  const toDevice = await peer.shareRoomKey(room, [new sdk.UserId(botUser)], new sdk.EncryptionSettings());
  t.is(toDevice.length, 1);
  for (const r of toDevice) await peer.markRequestAsSent(r.id, r.type, await peerHttp('PUT', `/sendToDevice/${encodeURIComponent(r.event_type)}/${encodeURIComponent(r.txn_id)}`, r.body));
  const content = JSON.parse(await peer.encryptRoomEvent(room, 'm.room.message', JSON.stringify({ msgtype: 'm.text', body: 'after the repair' }))) as { session_id: string };
  t.deepEqual(await restored.sync(), [content.session_id], 'the bot took the new room key over Olm');
  const event = { type: 'm.room.encrypted', content, sender: peerUser.userId, event_id: '$after', origin_server_ts: Date.now(), room_id: room.toString() };
  t.like(await restored.call({ op: 'decrypt', room: room.toString(), event }), { plaintext: { body: 'after the repair' } });

  // Every recorded event of the Sled store and the replaced store's own message decrypt.
  t.like(await restored.call({ op: 'decrypt', room: '!upgraded:example.org', event: own.event }), { plaintext: own.plaintext });
  let decrypted = 0;
  for (const e of fixture.expected.events) {
    const d = await restored.call({ op: 'decrypt', room: e.room_id, event: e.event });
    t.deepEqual(d.plaintext, e.plaintext.content ?? e.plaintext);
    decrypted++;
  }
  t.is(decrypted, fixture.expected.events.length);
});
