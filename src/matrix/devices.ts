/** Read-only looks at the account's devices: is one still registered, which keys it publishes. */
import type { MatrixClient } from './client.js';
import { MatrixError } from './errors.js';

export interface Device {
  device_id: string;
  display_name?: string;
  last_seen_ts?: number;
}

/** GET /devices/{id}: the device, or null when the account has no such device (404). */
export async function getDevice(client: MatrixClient, deviceId: string): Promise<Device | null> {
  try {
    return await client.request<Device>('GET', `/_matrix/client/v3/devices/${encodeURIComponent(deviceId)}`, { expect: [404] });
  } catch (e) {
    if (e instanceof MatrixError && e.status === 404) return null;
    throw e;
  }
}

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
