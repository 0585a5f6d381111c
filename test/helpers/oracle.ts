/**
 * The independent oracle: @matrix-org/matrix-sdk-crypto-wasm (matrix-rust-sdk's own crypto, not
 * our code) decrypts what we wrote or uploaded, imports it into an OlmMachine, and decrypts the
 * genuine recorded Megolm events. If it can, a bot can read its history.
 */
import * as sdk from '@matrix-org/matrix-sdk-crypto-wasm';
import bs58 from 'bs58';
import type { RecordedEvent } from './fixtures.js';

let ready: Promise<void> | undefined;
export function initOracle(): Promise<void> {
  ready ??= sdk.initAsync();
  return ready;
}

export async function newMachine(userId = '@newbot:localhost', deviceId = 'NEWDEVICE'): Promise<sdk.OlmMachine> {
  await initOracle();
  return sdk.OlmMachine.initialize(new sdk.UserId(userId), new sdk.DeviceId(deviceId));
}

/** Decodes a spaced base58 recovery key independently of our Rust code (the bs58 package). */
export function recoveryKeyToBase64(recoveryKey: string): string {
  const bytes = bs58.decode(recoveryKey.replace(/\s+/g, ''));
  if (bytes.length !== 35 || bytes[0] !== 0x8b || bytes[1] !== 0x01) throw new Error('not a recovery key');
  if (bytes.reduce((a, b) => a ^ b, 0) !== 0) throw new Error('recovery key parity');
  return Buffer.from(bytes.subarray(2, 34)).toString('base64').replace(/=+$/, '');
}

export interface ServerBackup {
  rooms: Record<string, { sessions: Record<string, { first_message_index: number; forwarded_count: number; is_verified: boolean; session_data: { ephemeral: string; mac: string; ciphertext: string } }> }>;
}

/** Decrypts every entry of a downloaded backup with the wasm BackupDecryptionKey. */
export async function decryptBackup(privateKeyBase64: string, backup: ServerBackup): Promise<Map<string, Map<string, Record<string, unknown>>>> {
  await initOracle();
  const key = sdk.BackupDecryptionKey.fromBase64(privateKeyBase64);
  const out = new Map<string, Map<string, Record<string, unknown>>>();
  for (const [roomId, room] of Object.entries(backup.rooms)) {
    const sessions = new Map<string, Record<string, unknown>>();
    for (const [sessionId, entry] of Object.entries(room.sessions)) {
      const d = entry.session_data;
      sessions.set(sessionId, JSON.parse(key.decryptV1(d.ephemeral, d.mac, d.ciphertext)) as Record<string, unknown>);
    }
    out.set(roomId, sessions);
  }
  return out;
}

export async function importBackedUp(machine: sdk.OlmMachine, decrypted: Map<string, Map<string, Record<string, unknown>>>, version: string) {
  const byRoom = new Map<sdk.RoomId, Map<string, unknown>>();
  for (const [roomId, sessions] of decrypted) byRoom.set(new sdk.RoomId(roomId), sessions);
  return machine.importBackedUpRoomKeys(byRoom, undefined as never, version);
}

/** Decrypts each recorded event; returns how many gave back exactly their plaintext. */
export async function decryptEvents(machine: sdk.OlmMachine, events: RecordedEvent[]): Promise<{ ok: number; failures: string[] }> {
  let ok = 0;
  const failures: string[] = [];
  const settings = new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted);
  for (const e of events) {
    try {
      const decrypted = await machine.decryptRoomEvent(JSON.stringify(e.event), new sdk.RoomId(e.room_id), settings);
      const clear = JSON.parse(decrypted.event) as { content: unknown; type: string };
      if (JSON.stringify(clear.content) === JSON.stringify(e.plaintext)) ok++;
      else failures.push(`${e.session_id}: wrong plaintext`);
    } catch (err) {
      failures.push(`${e.session_id}: ${(err as Error).message}`);
    }
  }
  return { ok, failures };
}

export { sdk };
