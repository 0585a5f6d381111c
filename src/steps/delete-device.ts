/**
 * delete-device: removes the bot's old device (the one the Sled store belonged to) once its keys
 * are safe. Refuses the device that owns our access token: deleting it would log the tool out and
 * kill the upgraded bot's session.
 */
import { ToolError } from '../errors.js';
import type { Output } from '../log.js';
import type { MatrixClient } from '../matrix/client.js';
import { deleteDevice, whoami } from '../matrix/account.js';

export interface DeleteDeviceOptions {
  client: MatrixClient;
  deviceId: string;
  password: string;
  out: Output;
}

export async function deleteOldDevice(opts: DeleteDeviceOptions): Promise<{ userId: string }> {
  const me = await whoami(opts.client);
  if (me.device_id && me.device_id === opts.deviceId) {
    throw new ToolError(
      'DEVICE',
      `device ${opts.deviceId} is the one this access token belongs to`,
      'use an access token of the bot\'s NEW device (or another session); the old device is the one in bot-sdk.json',
    );
  }
  await deleteDevice(opts.client, me.user_id, opts.deviceId, opts.password);
  return { userId: me.user_id };
}
