/** One real Synapse per test file (started in `before`, stopped in `after`); a fresh user per test. */
import type { TestFn } from 'ava';
import { LocalSynapse, type RegisteredUser, type SynapseOptions } from '../../src/devtools/local-synapse.js';

export interface WithSynapse {
  synapse: LocalSynapse;
}

export function useSynapse<T extends WithSynapse>(test: TestFn<T>, opts: SynapseOptions = {}): void {
  test.before(async (t) => {
    t.context.synapse = await LocalSynapse.start(opts);
  });
  test.after.always(async (t) => {
    await t.context.synapse?.stop();
  });
}

let counter = 0;
export function freshUser(synapse: LocalSynapse): Promise<RegisteredUser> {
  counter++;
  return synapse.registerUser(`bot${process.pid}x${counter}`);
}

/** Logs the user in as `deviceId` (the bot's old device, as bot-sdk.json names it), so that the device exists. */
export async function loginAsDevice(synapse: LocalSynapse, user: RegisteredUser, deviceId: string): Promise<string> {
  const r = await api<{ device_id: string }>(synapse, '', 'POST', '/_matrix/client/v3/login', {
    type: 'm.login.password', identifier: { type: 'm.id.user', user: user.userId }, password: user.password, device_id: deviceId,
  });
  return r.json.device_id;
}

export async function api<T = Record<string, unknown>>(synapse: LocalSynapse, token: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> {
  const r = await fetch(`${synapse.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, json: (await r.json()) as T };
}
