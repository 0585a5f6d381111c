/** The server-side key backup endpoints (client-server API v3, "Server-side key backups"). */
import { ToolError } from '../errors.js';
import type { MatrixClient } from './client.js';
import { MatrixError } from './errors.js';

export const BACKUP_ALGORITHM = 'm.megolm_backup.v1.curve25519-aes-sha2';
const BASE = '/_matrix/client/v3/room_keys';

export interface BackupVersion {
  version: string;
  algorithm: string;
  auth_data: { public_key?: string; signatures?: unknown };
  count: number;
  etag: string;
}

export interface SessionData {
  ephemeral: string;
  ciphertext: string;
  mac: string;
}

export interface KeyBackupData {
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: SessionData;
}

/** The current backup version, or null when the user has none. `maxAttempts` 1: one look, no retries. */
export async function currentBackup(client: MatrixClient, maxAttempts?: number): Promise<BackupVersion | null> {
  try {
    return await client.request<BackupVersion>('GET', `${BASE}/version`, { expect: [404], maxAttempts });
  } catch (e) {
    if (e instanceof MatrixError && e.status === 404) return null;
    throw e;
  }
}

export async function createBackup(client: MatrixClient, publicKey: string): Promise<string> {
  const { version } = await client.request<{ version: string }>('POST', `${BASE}/version`, {
    body: { algorithm: BACKUP_ALGORITHM, auth_data: { public_key: publicKey } },
  });
  return version;
}

export async function deleteBackup(client: MatrixClient, version: string): Promise<void> {
  await client.request('DELETE', `${BASE}/version/${encodeURIComponent(version)}`);
}

/** Raised on 413 so the uploader can halve the batch. */
export class BodyTooLarge extends Error {
  override readonly name = 'BodyTooLarge';
}

export function wrongVersion(version: string, detail: string): ToolError {
  return new ToolError(
    'WRONG_BACKUP_VERSION',
    `backup version ${version} is no longer the current one (${detail}): another client replaced or deleted it`,
    'find out who changed the backup; then run `enable` again (FORCE_NEW_BACKUP=1 if a backup exists) and rerun `upload`',
  );
}

/** PUT a prepared body; resolves to the server's total count for the version. */
export async function putRoomKeys(client: MatrixClient, version: string, rawBody: string | Uint8Array<ArrayBuffer>): Promise<{ count: number; etag: string }> {
  try {
    return await client.request<{ count: number; etag: string }>('PUT', `${BASE}/keys`, {
      query: { version },
      rawBody,
      expect: [403, 404, 413],
      onServerError: () => stillCurrent(client, version),
    });
  } catch (e) {
    if (e instanceof MatrixError) {
      if (e.status === 413) throw new BodyTooLarge(e.message);
      if (e.errcode === 'M_WRONG_ROOM_KEYS_VERSION') throw wrongVersion(version, `the server's current version is ${String(e.body.current_version ?? 'unknown')}`);
      if (e.status === 404) throw wrongVersion(version, 'the server does not know it');
    }
    throw e;
  }
}

/**
 * After a 5xx to an upload: is our version still the current one? Synapse answers an upload into a
 * deleted version with 404, but Dendrite (0.13) with `500 {"message":"PerformKeyBackup: backup was
 * deleted"}`, no errcode, and 500 again when no backup exists at all: retried, that is a minute of
 * backoff and then "check the homeserver's health" for a backup that someone replaced. One look at
 * the current version tells the two apart; if the look itself fails, the server is what is wrong
 * and the upload's retries go on.
 */
async function stillCurrent(client: MatrixClient, version: string): Promise<void> {
  let current: BackupVersion | null;
  try {
    current = await currentBackup(client, 1);
  } catch {
    return;
  }
  if (!current) throw wrongVersion(version, 'the server has no backup any more');
  if (current.version !== version) throw wrongVersion(version, `the server's current version is ${current.version}`);
}

/**
 * One room's backup as the server sent it (`{"sessions": {…}}`), unparsed: a room can hold tens of
 * thousands of entries, which verify's native check parses and decrypts without making them
 * JavaScript objects.
 */
/**
 * One room's backup (`GET /room_keys/keys/{roomId}`), its body handed to `read` as it arrives (a
 * room of a long-lived bot is tens of MB); a room the backup does not hold reads as an empty one.
 */
export async function readRoomKeys<T>(client: MatrixClient, version: string, roomId: string, read: (chunks: AsyncIterable<Uint8Array>) => Promise<T>): Promise<T> {
  try {
    return (await client.request('GET', `${BASE}/keys/${encodeURIComponent(roomId)}`, { query: { version }, expect: [404], readBody: read })) as T;
  } catch (e) {
    if (e instanceof MatrixError && e.status === 404) {
      if (e.errcode === 'M_NOT_FOUND') return read(oneChunk('{"sessions":{}}'));
      throw wrongVersion(version, 'the server does not know it');
    }
    throw e;
  }
}

async function* oneChunk(text: string): AsyncIterable<Uint8Array> {
  yield Buffer.from(text);
}

/** One session's backed-up entry, or null when the backup does not hold it. */
export async function getSessionKey(client: MatrixClient, version: string, roomId: string, sessionId: string): Promise<KeyBackupData | null> {
  try {
    return await client.request<KeyBackupData>('GET', `${BASE}/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}`, { query: { version }, expect: [404] });
  } catch (e) {
    if (e instanceof MatrixError && e.status === 404 && e.errcode === 'M_NOT_FOUND') return null;
    throw e;
  }
}
