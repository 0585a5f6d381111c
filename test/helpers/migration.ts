/** What the migration specs share: scratch folders, the CLI's environment, the server's keys as decrypted by the oracle. */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LocalSynapse } from '../../src/devtools/local-synapse.js';
import { keyIdentity, type Fixture } from './fixtures.js';
import { api } from './homeserver.js';
import { decryptBackup, type ServerBackup } from './oracle.js';

export async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mig-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

export function envFor(f: Fixture, baseUrl: string, token: string, mig: string): Record<string, string> {
  return { CRYPTO_STORE_PATH: f.store, MIGRATION_DIR: mig, HOMESERVER_URL: baseUrl, ACCESS_TOKEN: token, STORE_PASSPHRASE: f.expected.passphrase ?? '' };
}

export function recoveryKeys(text: string): { base58: string; base64: string } {
  return { base58: /^recovery_key: (.+)$/m.exec(text)![1]!, base64: /^recovery_key_base64: (.+)$/m.exec(text)![1]! };
}

/** Every key in the server's current backup, decrypted by the wasm oracle, as sorted identities. */
export async function serverKeys(synapse: LocalSynapse, token: string, recoveryKeyText: string): Promise<string[]> {
  const version = await api<{ version: string }>(synapse, token, 'GET', '/_matrix/client/v3/room_keys/version');
  const backup = await api<ServerBackup>(synapse, token, 'GET', `/_matrix/client/v3/room_keys/keys?version=${version.json.version}`);
  const decrypted = await decryptBackup(recoveryKeys(recoveryKeyText).base64, backup.json);
  return backupIdentities(decrypted).sort();
}

/** The identities of the keys the oracle decrypted from a backup, in the backup's order. */
export function backupIdentities(decrypted: Awaited<ReturnType<typeof decryptBackup>>): string[] {
  return [...decrypted].flatMap(([roomId, sessions]) =>
    [...sessions].map(([sessionId, k]) => keyIdentity({ ...k, room_id: roomId, session_id: sessionId } as unknown as Parameters<typeof keyIdentity>[0])),
  );
}
