/**
 * verify: proves the backup, not just counts it. The store is read again (never trusted from a
 * file); the server's entries are downloaded room by room, decrypted natively with our private key
 * and compared with the source key by key through SHA-256 digests of their contents, so plaintext
 * session keys never reach JavaScript here either.
 */
import type { Output } from '../log.js';
import type { MatrixClient } from '../matrix/client.js';
import { currentBackup, getSessionKey, readRoomKeys } from '../matrix/key-backup.js';
import { withCappedHeapGrowth } from '../pipeline/heap.js';
import { call, native } from '../store/native.js';
import { closeOnSignal, SessionBatches, warnSledWouldRefuse, type StoreSource } from '../store/sessions.js';
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
/** A room's answer is checked a megabyte at a time as it arrives. */
const ROOM_CHUNK_BYTES = 1 << 20;

export async function verifyBackup(opts: VerifyOptions): Promise<VerifyReport> {
  const backup = await currentBackup(opts.client);
  const current = backup?.version === opts.version;
  const report: VerifyReport = {
    version: opts.version,
    keysInBackup: backup && current ? backup.count : 0,
    keysInStore: 0,
    damagedInStore: 0,
    checked: 0,
    missingCount: 0,
    differentCount: 0,
    missing: [],
    different: [],
    complete: false,
    sampled: Boolean(opts.sample),
  };
  const noteProblem = () => {
    report.problem = `backup version ${opts.version} is not the current one on the server (current: ${backup?.version ?? 'none'})`;
  };
  if (opts.sample) await checkSample(opts, opts.sample, report, current ? undefined : noteProblem);
  else await withCappedHeapGrowth(() => checkEveryKey(opts, report, current ? undefined : noteProblem));
  report.complete = !report.problem && report.missingCount === 0 && report.differentCount === 0 && report.keysInBackup >= report.keysInStore;
  return report;
}

/**
 * Every key: the store's fingerprints are gathered natively (28 bytes a key, so a store of
 * millions fits where a JavaScript map of them would not), then each room's backup is downloaded,
 * decrypted natively and checked against them.
 */
async function checkEveryKey(opts: VerifyOptions, report: VerifyReport, notCurrent: (() => void) | undefined): Promise<void> {
  const { cryptoStorePath, passphrase } = opts.source;
  const scan = await call(() => native().startFingerprintScan({ cryptoStorePath, passphrase, expectedKeys: report.keysInBackup }));
  const untrack = closeOnSignal(scan);
  const progress = opts.out.progress('reading the store');
  const ticker = setInterval(() => progress.update(scan.progress().keys), 500);
  let summary: Awaited<ReturnType<typeof scan.wait>>;
  try {
    summary = await call(() => scan.wait());
  } finally {
    clearInterval(ticker);
    untrack();
  }
  progress.update(summary.keys);
  progress.end();
  warnSledWouldRefuse(opts.out, summary.sledWouldRefuse);
  report.keysInStore = summary.keys;
  report.damagedInStore = summary.damaged;
  if (notCurrent) return notCurrent();

  const verifyProgress = opts.out.progress('checking the backup');
  const total = summary.rooms.reduce((n, r) => n + r.keys, 0);
  for (const { roomId } of summary.rooms) {
    const check = await readRoomKeys(opts.client, opts.version, roomId, async (chunks) => {
      const room = scan.startRoom(roomId, opts.privateKey);
      // Chunks gathered to about a megabyte: one native task each, not one per network read.
      let gathered: Uint8Array[] = [];
      let bytes = 0;
      const pushGathered = async () => {
        if (!gathered.length) return;
        const chunk = Buffer.concat(gathered, bytes);
        gathered = [];
        bytes = 0;
        await call(() => room.push(chunk));
      };
      for await (const chunk of chunks) {
        gathered.push(chunk);
        bytes += chunk.length;
        if (bytes >= ROOM_CHUNK_BYTES) await pushGathered();
      }
      await pushGathered();
      return call(() => room.finish());
    });
    report.checked += check.checked;
    report.missingCount += check.missing;
    report.differentCount += check.different.length;
    for (const d of check.different.slice(0, LIST_LIMIT - report.different.length)) report.different.push({ roomId, sessionId: d.sessionId, reason: d.reason });
    verifyProgress.update(report.checked, total);
  }
  verifyProgress.end();
  // The set holds hashes of session IDs: naming what is missing takes one more read of the store.
  if (report.missingCount) report.missing = await call(() => scan.missingKeys(LIST_LIMIT));
}

/** A sample: a reservoir of the store's keys, each looked up on the server with one request. */
async function checkSample(opts: VerifyOptions, sample: number, report: VerifyReport, notCurrent: (() => void) | undefined): Promise<void> {
  const reservoir: { roomId: string; sessionId: string; digest: string }[] = [];
  const progress = opts.out.progress('reading the store');
  for await (const batch of await SessionBatches.open(opts.source, { mode: 'digest' })) {
    report.damagedInStore += batch.damaged.length;
    for (const d of batch.digests) {
      report.keysInStore++;
      if (reservoir.length < sample) {
        reservoir.push(d);
      } else {
        const j = Math.floor(Math.random() * report.keysInStore);
        if (j < sample) reservoir[j] = d;
      }
    }
    progress.update(report.keysInStore);
  }
  progress.end();
  if (notCurrent) return notCurrent();

  const verifyProgress = opts.out.progress('checking the backup');
  for (const d of reservoir) {
    report.checked++;
    const data = await getSessionKey(opts.client, opts.version, d.roomId, d.sessionId);
    const [server] = data ? await call(() => native().decryptBackupDigests(opts.privateKey, [{ roomId: d.roomId, sessionId: d.sessionId, sessionData: data.session_data }])) : [];
    if (!server) {
      report.missingCount++;
      if (report.missing.length < LIST_LIMIT) report.missing.push({ roomId: d.roomId, sessionId: d.sessionId });
    } else if (server.error || server.digest !== d.digest) {
      report.differentCount++;
      if (report.different.length < LIST_LIMIT) report.different.push({ roomId: d.roomId, sessionId: d.sessionId, reason: server.error ? `cannot be decrypted with our key: ${server.error}` : 'differs from the store' });
    }
    verifyProgress.update(report.checked, reservoir.length);
  }
  verifyProgress.end();
}
