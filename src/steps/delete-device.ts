/**
 * delete-device: removes the bot's old device (the one the Sled store belonged to) once its keys
 * are safe. Refuses the device that owns our access token: deleting it would log the tool out and
 * kill the upgraded bot's session.
 */
import { ToolError } from '../errors.js';
import type { MatrixClient } from '../matrix/client.js';
import { getDevice, listDevices, whoami } from '../matrix/account.js';

export interface OldDevice {
  userId: string;
  deviceId: string;
}

/**
 * Checks, before any password is asked for, that the device can be deleted: it exists (the
 * servers answer 200 to deleting an unknown device, and the operator would read "deleted") and is
 * not the one of our own access token.
 */
export async function findOldDevice(client: MatrixClient, deviceId: string): Promise<OldDevice> {
  const me = await whoami(client);
  if (me.device_id && me.device_id === deviceId) {
    throw new ToolError(
      'DEVICE',
      `device ${deviceId} is the one this access token belongs to`,
      'use an access token of the bot\'s NEW device (or another session); the old device is the one in bot-sdk.json',
    );
  }
  if (!(await getDevice(client, deviceId))) {
    const devices = await listDevices(client);
    const named = devices.map((d) => `${d.device_id}${d.device_id === me.device_id ? ' (this access token)' : ''}`);
    const shown = named.length > 20 ? `${named.slice(0, 20).join(', ')} and ${named.length - 20} more` : named.join(', ') || 'none';
    throw new ToolError(
      'DEVICE',
      `${me.user_id} has no device ${deviceId} (its devices: ${shown}); nothing was deleted`,
      'set OLD_DEVICE_ID to the old bot\'s device (deviceId in its bot-sdk.json); if it is not listed, it is already gone',
    );
  }
  return { userId: me.user_id, deviceId };
}
