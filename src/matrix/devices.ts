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
