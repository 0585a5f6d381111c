/** Who the access token belongs to, and removing a device with user-interactive auth. */
import { ToolError } from '../errors.js';
import type { MatrixClient } from './client.js';
import { MatrixError } from './errors.js';

export interface WhoAmI {
  user_id: string;
  device_id?: string;
}

export async function whoami(client: MatrixClient): Promise<WhoAmI> {
  return client.request<WhoAmI>('GET', '/_matrix/client/v3/account/whoami');
}

export interface Device {
  device_id: string;
  display_name?: string;
}

/**
 * The device, or null when the user has none of that ID. Looked up before a deletion because both
 * Synapse and Dendrite answer 200 to `DELETE /devices/{id}` of an unknown device.
 */
export async function getDevice(client: MatrixClient, deviceId: string): Promise<Device | null> {
  try {
    return await client.request<Device>('GET', `/_matrix/client/v3/devices/${encodeURIComponent(deviceId)}`, { expect: [404] });
  } catch (e) {
    if (e instanceof MatrixError && e.status === 404) return null;
    throw e;
  }
}

export async function listDevices(client: MatrixClient): Promise<Device[]> {
  return (await client.request<{ devices?: Device[] }>('GET', '/_matrix/client/v3/devices')).devices ?? [];
}

/**
 * DELETE /devices/{id}: the first call without auth yields the UIA session, the second answers the
 * password stage.
 */
export async function deleteDevice(client: MatrixClient, userId: string, deviceId: string, password: string): Promise<void> {
  const path = `/_matrix/client/v3/devices/${encodeURIComponent(deviceId)}`;
  let session: string | undefined;
  try {
    await client.request('DELETE', path, { body: {}, expect: [401, 404] });
    return; // no auth needed (some servers)
  } catch (e) {
    if (!(e instanceof MatrixError)) throw e;
    if (e.status === 404) throw deviceNotFoundOrDelegated(deviceId, e);
    const flows = (e.body.flows as { stages: string[] }[] | undefined) ?? [];
    if (!flows.some((f) => f.stages.length === 1 && f.stages[0] === 'm.login.password')) {
      throw new ToolError('DEVICE', 'the homeserver offers no password login to confirm the deletion (delegated authentication?)', 'delete the device from your account\'s management page (e.g. the MAS account page) instead');
    }
    session = e.body.session as string | undefined;
  }
  try {
    await client.request('DELETE', path, {
      body: { auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: userId }, password, session } },
      expect: [401, 403, 404],
    });
  } catch (e) {
    if (!(e instanceof MatrixError)) throw e;
    if (e.status === 404) throw deviceNotFoundOrDelegated(deviceId, e);
    if (e.status === 401 || e.status === 403) {
      throw new ToolError('DEVICE', `the homeserver refused the password (${e.errcode ?? e.status})`, 'set MIGRATION_PASSWORD to the bot account\'s password (the one it logs in with)');
    }
    throw e;
  }
}

function deviceNotFoundOrDelegated(deviceId: string, e: MatrixError): ToolError {
  if (e.errcode === 'M_NOT_FOUND') {
    return new ToolError('DEVICE', `device ${deviceId} does not exist on the homeserver (already deleted?)`, 'check OLD_DEVICE_ID; nothing needs deleting if it is gone');
  }
  return new ToolError('DEVICE', 'the homeserver has no device deletion endpoint (404): it delegates authentication (OAuth/MAS)', 'delete the device from your account\'s management page instead');
}
