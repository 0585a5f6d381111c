/** Which identity keys the homeserver publishes for a device (`POST /keys/query`). */
import type { MatrixClient } from './client.js';

interface KeysQueryResponse {
  device_keys?: Record<string, Record<string, { keys?: Record<string, string> }>>;
}

/** POST /keys/query for one device: the identity keys the server publishes for it, or null. */
export async function publishedDeviceKeys(client: MatrixClient, userId: string, deviceId: string): Promise<{ ed25519?: string; curve25519?: string } | null> {
  const answer = await client.request<KeysQueryResponse>('POST', '/_matrix/client/v3/keys/query', {
    body: { device_keys: { [userId]: [deviceId] } },
  });
  const keys = answer.device_keys?.[userId]?.[deviceId]?.keys;
  if (!keys) return null;
  return { ed25519: keys[`ed25519:${deviceId}`], curve25519: keys[`curve25519:${deviceId}`] };
}

interface KeysClaimResponse {
  one_time_keys?: Record<string, Record<string, Record<string, { fallback?: boolean }>>>;
}

/**
 * Claims a device's one-time keys until the server hands out its fallback key (or nothing): after
 * an account was replaced under the same device ID, the keys the other account left on the server
 * are signed by its key, so a peer that claims one refuses it and withholds its room keys. The
 * bot uploads fresh ones on its next start. Returns how many were claimed (bounded: a server
 * holds at most a few hundred).
 */
export async function claimOneTimeKeys(client: MatrixClient, userId: string, deviceId: string, limit = 1000): Promise<number> {
  let claimed = 0;
  while (claimed < limit) {
    const answer = await client.request<KeysClaimResponse>('POST', '/_matrix/client/v3/keys/claim', {
      body: { one_time_keys: { [userId]: { [deviceId]: 'signed_curve25519' } } },
    });
    const keys = Object.values(answer.one_time_keys?.[userId]?.[deviceId] ?? {});
    if (keys.length === 0 || keys[0]!.fallback) break;
    claimed++;
  }
  return claimed;
}
