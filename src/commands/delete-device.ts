import { Command, Option } from 'clipanion';
import { StoreLocation } from '../store/location.js';
import { setting } from '../environment.js';
import { ToolError } from '../errors.js';
import { deleteDevice } from '../matrix/account.js';
import { findOldDevice } from '../steps/delete-device.js';
import { askHidden, askLine } from '../terminal.js';
import { HomeserverCommand } from './homeserver.js';

export class DeleteDeviceCommand extends HomeserverCommand {
  static override paths = [['delete-device']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'Delete the bot\'s old device on the homeserver (after its keys are safe)',
    details: 'The device comes from OLD_DEVICE_ID or the store\'s bot-sdk.json. Asks for the account password (hidden) and for the device ID to be typed as confirmation; non-interactive runs need MIGRATION_PASSWORD and MIGRATION_CONFIRM set to the device ID.',
  });

  oldDeviceId = Option.String('--old-device-id', { description: 'The device to delete (OLD_DEVICE_ID; default: deviceId in bot-sdk.json)' });
  password = Option.String('--password', { description: 'The account password (MIGRATION_PASSWORD; prefer the variable or the prompt)' });
  confirm = Option.String('--confirm', { description: 'The device ID again, to confirm (MIGRATION_CONFIRM)' });

  protected async perform(): Promise<number> {
    const client = this.client();
    const deviceId = setting(this.oldDeviceId, 'OLD_DEVICE_ID') || (await StoreLocation.deviceIdFor(this.locations().cryptoStorePath));
    if (!deviceId) {
      throw new ToolError('DEVICE', 'no device to delete: OLD_DEVICE_ID is not set and bot-sdk.json names none', 'set OLD_DEVICE_ID to the old device\'s ID');
    }
    // A confirmation given beforehand is checked before any request; one typed on a terminal is
    // asked once the device is known to exist.
    const given = setting(this.confirm, 'MIGRATION_CONFIRM');
    if (given !== undefined) checkConfirmation(given, deviceId);
    const device = await findOldDevice(client, deviceId);
    const confirmation = given ?? (await askLine(`Type the device ID ${deviceId} to confirm its deletion: `));
    if (confirmation === undefined) {
      throw new ToolError('DEVICE', 'deleting a device needs a confirmation', `set MIGRATION_CONFIRM=${deviceId} (and MIGRATION_PASSWORD) for a non-interactive run`);
    }
    checkConfirmation(confirmation, deviceId);
    const password = setting(this.password, 'MIGRATION_PASSWORD') ?? (await askHidden('Account password: '));
    if (!password) {
      throw new ToolError('DEVICE', 'deleting a device needs the account password', 'set MIGRATION_PASSWORD or run on a terminal to be asked');
    }
    await deleteDevice(client, device.userId, device.deviceId, password);
    this.out.result(`deleted device ${deviceId} of ${device.userId}`);
    this.record({ user_id: device.userId, device_id: deviceId, deleted: true });
    return 0;
  }
}

function checkConfirmation(confirmation: string, deviceId: string): void {
  if (confirmation.trim() !== deviceId) {
    throw new ToolError('DEVICE', `the confirmation "${confirmation.trim()}" does not match the device ID ${deviceId}`, 'type the device ID exactly, or set MIGRATION_CONFIRM to it');
  }
}
