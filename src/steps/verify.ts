/**
 * verify: proves the backup, not just counts it. The store is read again (never trusted from a
 * file); the server's entries are downloaded room by room, decrypted natively with our private key
 * and compared with the source key by key through SHA-256 digests of their contents, so plaintext
 * session keys never reach JavaScript here either.
 */
import type { Output } from '../log.js';
import type { MatrixClient } from '../matrix/client.js';
import { currentBackup, getRoomKeys, getSessionKey, type KeyBackupData } from '../matrix/key-backup.js';
import { call, native } from '../store/native.js';
import { SessionBatches, type StoreSource } from '../store/sessions.js';
import type { StepContext } from './context.js';
import { ourCurrentBackup } from './upload.js';

export interface VerifyOptions {
  client: MatrixClient;
  version: string;
  privateKey: Buffer;
  source: StoreSource;
  /** Check only this many keys, chosen at random, one request each. */
  sample?: number;
  out: Output;
}

/** verify as a step: our version and key, the check, and its outcome in the state file. */
export async function verifyStep(ctx: StepContext, sample: number | undefined): Promise<VerifyReport> {
  const { key, version } = await ourCurrentBackup(ctx);
  const report = await verifyBackup({ client: ctx.client, version, privateKey: key.privateKey, source: ctx.source, sample, out: ctx.out });
  await ctx.state.update((s) => {
    s.verify = { version, status: report.complete ? 'COMPLETE' : 'INCOMPLETE', keys_in_backup: report.keysInBackup, keys_in_store: report.keysInStore, at: new Date().toISOString() };
  });
  return report;
}

export interface VerifyReport {
  version: string;
  keysInBackup: number;
  keysInStore: number;
  damagedInStore: number;
  checked: number;
  missingCount: number;
  differentCount: number;
  missing: { roomId: string; sessionId: string }[];
  different: { roomId: string; sessionId: string; reason: string }[];
  complete: boolean;
  sampled: boolean;
  problem?: string;
}

const LIST_LIMIT = 50;

export async function verifyBackup(opts: VerifyOptions): Promise<VerifyReport> {
  const backup = await currentBackup(opts.client);
  const keysInBackup = backup && backup.version === opts.version ? backup.count : 0;

  // 1. The store, read again: per room, session → digest (a sample keeps only a reservoir).
  const expected = new Map<string, Map<string, string>>();
  let keysInStore = 0;
  let damagedInStore = 0;
  const reservoir: { roomId: string; sessionId: string; digest: string }[] = [];
  const progress = opts.out.progress('reading the store');
  for await (const batch of await SessionBatches.open(opts.source, { mode: 'digest' })) {
    damagedInStore += batch.damaged.length;
    for (const d of batch.digests) {
      keysInStore++;
      if (!opts.sample) {
        let room = expected.get(d.roomId);
        if (!room) expected.set(d.roomId, (room = new Map()));
        room.set(d.sessionId, d.digest);
      } else if (reservoir.length < opts.sample) {
        reservoir.push(d);
      } else {
        const j = Math.floor(Math.random() * keysInStore);
        if (j < opts.sample) reservoir[j] = d;
      }
    }
    progress.update(keysInStore);
  }
  progress.end();
  if (opts.sample) {
    for (const d of reservoir) {
      let room = expected.get(d.roomId);
      if (!room) expected.set(d.roomId, (room = new Map()));
      room.set(d.sessionId, d.digest);
    }
  }

  const report: VerifyReport = {
    version: opts.version,
    keysInBackup,
    keysInStore,
    damagedInStore,
    checked: 0,
    missingCount: 0,
    differentCount: 0,
    missing: [],
    different: [],
    complete: false,
    sampled: Boolean(opts.sample),
  };
  if (!backup || backup.version !== opts.version) {
    report.problem = `backup version ${opts.version} is not the current one on the server (current: ${backup?.version ?? 'none'})`;
    return report;
  }

  // 2. The server, room by room: decrypted natively, compared by digest.
  const verifyProgress = opts.out.progress('checking the backup');
  const total = opts.sample ? reservoir.length : keysInStore;
  for (const [roomId, wanted] of expected) {
    const sessions: Record<string, KeyBackupData> = {};
    if (opts.sample) {
      for (const sessionId of wanted.keys()) {
        const data = await getSessionKey(opts.client, opts.version, roomId, sessionId);
        if (data) sessions[sessionId] = data;
      }
    } else {
      Object.assign(sessions, (await getRoomKeys(opts.client, opts.version, roomId)).rooms[roomId]?.sessions ?? {});
    }
    const entries: { roomId: string; sessionId: string; sessionData: KeyBackupData['session_data'] }[] = [];
    for (const [sessionId, data] of Object.entries(sessions)) {
      if (wanted.has(sessionId)) entries.push({ roomId, sessionId, sessionData: data.session_data });
    }
    const decrypted = await call(() => native().decryptBackupDigests(opts.privateKey, entries));
    const onServer = new Map(decrypted.map((d) => [d.sessionId, d]));
    for (const [sessionId, digest] of wanted) {
      report.checked++;
      const server = onServer.get(sessionId);
      if (!server) {
        report.missingCount++;
        if (report.missing.length < LIST_LIMIT) report.missing.push({ roomId, sessionId });
      } else if (server.error) {
        if (report.different.length < LIST_LIMIT) report.different.push({ roomId, sessionId, reason: `cannot be decrypted with our key: ${server.error}` });
        report.differentCount++;
      } else if (server.digest !== digest) {
        if (report.different.length < LIST_LIMIT) report.different.push({ roomId, sessionId, reason: 'differs from the store' });
        report.differentCount++;
      }
    }
    expected.delete(roomId);
    verifyProgress.update(report.checked, total);
  }
  verifyProgress.end();
  report.complete = report.missingCount === 0 && report.differentCount === 0 && keysInBackup >= keysInStore;
  return report;
}
