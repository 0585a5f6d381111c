/** Reading bot-sdk.json without opening the Sled store (what delete-device needs). */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ToolError } from '../errors.js';

export const StoreLocation = {
  async deviceIdFor(cryptoStorePath: string): Promise<string | undefined> {
    const file = path.join(cryptoStorePath, 'bot-sdk.json');
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new ToolError('IO_ERROR', `cannot read ${file}: ${(e as Error).message}`, 'check the file\'s permissions');
    }
    try {
      const id = (JSON.parse(text) as { deviceId?: unknown }).deviceId;
      return typeof id === 'string' && id ? id : undefined;
    } catch {
      throw new ToolError('INVALID_BOT_SDK_JSON', `${file} is not valid JSON`, 'fix bot-sdk.json or pass the device ID with OLD_DEVICE_ID');
    }
  },
};
