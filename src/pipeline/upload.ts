/**
 * upload: encrypted entries from the native stream → request bodies under a byte limit → PUT with a
 * bounded number of requests in flight → checkpoint in migration-state.json.
 *
 * Backpressure end to end: we pull the next source batch only when a request slot is free, and the
 * native reader runs at most `readAhead` batches ahead of us, so a slow server slows the reader
 * and memory stays flat. Checkpoints advance only over source batches whose every entry the server
 * has acknowledged, so a crash at any moment resumes without a gap (re-sending is harmless: PUT
 * is idempotent).
 */
import { withCappedHeapGrowth } from './heap.js';
import { ToolError } from '../errors.js';
import type { Output } from '../log.js';
import type { MatrixClient } from '../matrix/client.js';
import { BodyTooLarge, putRoomKeys } from '../matrix/key-backup.js';
import { SessionBatches, warnSledWouldRefuse, type BackupEntries, type DamagedRecord, type KeySource } from '../store/sessions.js';
import { BodySizer, DEFAULT_MAX_BODY_LIMIT } from './body-size.js';
import { BodyPool } from './body-pool.js';
import { damagedEntryError } from './damaged.js';

export interface UploadOptions {
  client: MatrixClient;
  version: string;
  publicKey: string;
  source: KeySource;
  startAfter?: string;
  /** Request body limit in bytes to start with ({@link DEFAULT_BODY_LIMIT} unless the user says otherwise). */
  bodyLimit: number;
  /** How far the limit may grow when the server's per-request cost dominates ({@link BodySizer}); `bodyLimit` or less: fixed. */
  maxBodyLimit?: number;
  /** Requests in flight (Synapse serializes one user's uploads; 2 overlaps our work with its). */
  inFlight: number;
  skipErrors: boolean;
  out: Output;
  /** Called after each advance of the acknowledged position. */
  checkpoint(resumeAfter: string, acknowledged: number, damaged: number): Promise<void>;
  onDamaged?(d: DamagedRecord): Promise<void>;
  batchSize?: number;
  readAhead?: number;
}

export interface UploadSummary {
  sent: number;
  damaged: number;
  requests: number;
  serverCount: number;
  perRoom: Map<string, number>;
  finalBodyLimit: number;
}

/** One encrypted key: its room, and its `"sessionId":{KeyBackupData}` member of the room's
 * `sessions` object (UTF-8 JSON: a slice of the batch's fragments, made by the binding). */
interface Entry {
  roomId: string;
  fragment: Uint8Array;
}

interface Part {
  seq: number;
  entries: Entry[];
}

/** A batch's encrypted keys, one by one. */
export function batchEntries(backup: BackupEntries): Entry[] {
  const entries: Entry[] = new Array(backup.ends.length);
  let start = 0;
  for (let i = 0; i < backup.ends.length; i++) {
    const end = backup.ends[i]!;
    entries[i] = { roomId: backup.rooms[backup.roomOf[i]!]!, fragment: backup.fragments.subarray(start, end) };
    start = end;
  }
  return entries;
}

const COMMA = Buffer.from(',');
const ROOMS_OPEN = Buffer.from('{"rooms":{');
const CLOSE = Buffer.from('}}');

/**
 * The entries filed under their rooms: a `PUT /room_keys/keys` body, as UTF-8 bytes spliced from
 * the fragments. Each entry's fragment then points into the body instead of its batch's buffer:
 * while the request is in flight only the body is held, not also the batch buffers its keys came
 * from (about as many bytes again), and a body split after a 413 is spliced from the slices of
 * this one. The bytes are `pool`'s where one is given (`capacity`: the limit, for a new buffer).
 */
export function buildBody(entries: Entry[], pool?: BodyPool, capacity = 0): Buffer<ArrayBuffer> {
  const rooms = new Map<string, Entry[]>();
  for (const e of entries) {
    let list = rooms.get(e.roomId);
    if (!list) rooms.set(e.roomId, (list = []));
    list.push(e);
  }
  const heads = [...rooms.keys()].map((room, i) => Buffer.from(`${i > 0 ? ',' : ''}${JSON.stringify(room)}:{"sessions":{`));
  let length = ROOMS_OPEN.length + CLOSE.length;
  for (const head of heads) length += head.length + CLOSE.length;
  for (const e of entries) length += e.fragment.length + COMMA.length;
  const body = pool ? pool.take(length, capacity) : Buffer.allocUnsafeSlow(length);
  let at = 0;
  const put = (bytes: Uint8Array) => {
    body.set(bytes, at);
    at += bytes.length;
  };
  put(ROOMS_OPEN);
  let r = 0;
  for (const list of rooms.values()) {
    put(heads[r++]!);
    list.forEach((e, i) => {
      if (i > 0) put(COMMA);
      const start = at;
      put(e.fragment);
      e.fragment = body.subarray(start, at);
    });
    put(CLOSE);
  }
  put(CLOSE);
  // The length counted a comma for every entry, where each room's first has none.
  return body.subarray(0, at);
}

const ENVELOPE_BYTES = 64;
/** Bytes one entry adds to a body, so the limit holds: its fragment, the room ID (worst case: a
 * room of its own), quotes and punctuation. */
function entryBytes(e: Entry): number {
  return e.fragment.length + Buffer.byteLength(e.roomId) + 32;
}

/** The stream of batches into the backup, with V8's heap held near its live size. */
export function uploadKeys(opts: UploadOptions): Promise<UploadSummary> {
  return withCappedHeapGrowth(() => streamUpload(opts));
}

async function streamUpload(opts: UploadOptions): Promise<UploadSummary> {
  const { out } = opts;
  const summary: UploadSummary = { sent: 0, damaged: 0, requests: 0, serverCount: 0, perRoom: new Map(), finalBodyLimit: opts.bodyLimit };
  const sizer = new BodySizer(opts.bodyLimit, opts.maxBodyLimit ?? DEFAULT_MAX_BODY_LIMIT, (limit, beforeMs, afterMs) =>
    out.info(`larger requests cost the homeserver ${Math.round(afterMs * 1000)} µs a key instead of ${Math.round(beforeMs * 1000)}: requests of up to ${(limit / 1048576).toFixed(1)} MiB from now on`),
  );

  // Checkpointing over source batches, in order.
  const batches: { resumeAfter: string; remaining: number; entries: number; damaged: number }[] = [];
  let committed = 0; // batches[0..committed) are acknowledged and recorded
  let acknowledged = 0;
  let damagedCommitted = 0;
  let checkpointChain: Promise<void> = Promise.resolve();
  const advance = () => {
    let moved = false;
    while (committed < batches.length && batches[committed]!.remaining === 0) {
      acknowledged += batches[committed]!.entries;
      damagedCommitted += batches[committed]!.damaged;
      committed++;
      moved = true;
    }
    if (moved) {
      const at = batches[committed - 1]!.resumeAfter;
      const ack = acknowledged;
      const dmg = damagedCommitted;
      checkpointChain = checkpointChain.then(() => opts.checkpoint(at, ack, dmg));
    }
  };

  // Requests in flight.
  const running = new Set<Promise<void>>();
  const bodies = new BodyPool(opts.inFlight + 1);
  let failure: unknown;
  const progress = out.progress('uploading');

  const send = async (parts: Part[]): Promise<void> => {
    const entries = parts.flatMap((p) => p.entries);
    // Given back to the pool once answered, or once the halves of a refused one were sent (their
    // keys are slices of it until then); the entries are not read again after.
    const body = buildBody(entries, bodies, sizer.limit);
    try {
      const sentAt = performance.now();
      const { count } = await putRoomKeys(opts.client, opts.version, body);
      sizer.answered({ keys: entries.length, bytes: body.length, sentAt, answeredAt: performance.now() });
      summary.requests++;
      summary.serverCount = Math.max(summary.serverCount, count);
    } catch (e) {
      if (e instanceof BodyTooLarge && entries.length > 1) {
        // The server (or a proxy) wants smaller bodies: halve, for this request and the rest.
        const limit = sizer.refused();
        out.warn(`the homeserver refused a ${entries.length}-key request as too large (413); using requests of at most ${limit} bytes`);
        const [a, b] = splitParts(parts);
        await send(a);
        await send(b);
        return;
      }
      if (e instanceof BodyTooLarge) {
        throw new ToolError('HOMESERVER_UNREACHABLE', 'the homeserver refuses even a single key as too large (413)', 'raise the body size limit of the reverse proxy in front of the homeserver to at least 64 KB');
      }
      throw e;
    } finally {
      bodies.give(body);
    }
    for (const p of parts) {
      batches[p.seq]!.remaining -= p.entries.length;
      summary.sent += p.entries.length;
      for (const e of p.entries) summary.perRoom.set(e.roomId, (summary.perRoom.get(e.roomId) ?? 0) + 1);
    }
    summary.finalBodyLimit = sizer.limit;
    progress.update(summary.sent, undefined, `sent, server holds ${summary.serverCount}`);
    advance();
  };

  const launch = async (parts: Part[]) => {
    while (running.size >= opts.inFlight) await Promise.race(running);
    if (failure) throw failure;
    const p = send(parts).catch((e) => {
      failure ??= e;
    });
    const tracked = p.finally(() => running.delete(tracked));
    running.add(tracked);
  };

  const stream = await SessionBatches.open(
    opts.source,
    { mode: 'backup', backupPublicKey: opts.publicKey },
    { startAfter: opts.startAfter, batchSize: opts.batchSize, readAhead: opts.readAhead },
  );
  warnSledWouldRefuse(out, stream.info.sledWouldRefuse);
  try {
    let pending: Part[] = [];
    let pendingBytes = ENVELOPE_BYTES;
    for await (const batch of stream) {
      if (failure) throw failure;
      for (const d of batch.damaged) {
        if (!opts.skipErrors) {
          throw damagedEntryError(d, 'rerun with --skip-errors to upload every readable key and list the damaged ones (--failed-output)');
        }
        summary.damaged++;
        await opts.onDamaged?.(d);
      }
      const entries = batch.backup ? batchEntries(batch.backup) : [];
      const seq = batches.length;
      batches.push({ resumeAfter: batch.resumeAfter, remaining: entries.length, entries: entries.length, damaged: batch.damaged.length });
      let part: Part = { seq, entries: [] };
      for (const entry of entries) {
        const size = entryBytes(entry);
        if (pendingBytes + size > sizer.limit && (pending.length > 0 || part.entries.length > 0)) {
          if (part.entries.length) pending.push(part);
          await launch(pending);
          pending = [];
          pendingBytes = ENVELOPE_BYTES;
          part = { seq, entries: [] };
        }
        part.entries.push(entry);
        pendingBytes += size;
      }
      if (part.entries.length) pending.push(part);
      if (entries.length === 0) advance();
    }
    if (pending.length) await launch(pending);
    await Promise.all(running);
    if (failure) throw failure;
    await checkpointChain;
    progress.end();
    return summary;
  } catch (e) {
    progress.end();
    stream.close();
    await Promise.allSettled(running);
    await checkpointChain.catch(() => undefined);
    throw e;
  }
}

function splitParts(parts: Part[]): [Part[], Part[]] {
  const entries = parts.flatMap((p) => p.entries.map((e) => ({ seq: p.seq, e })));
  const half = Math.ceil(entries.length / 2);
  const regroup = (list: typeof entries): Part[] => {
    const out: Part[] = [];
    for (const { seq, e } of list) {
      const last = out[out.length - 1];
      if (last && last.seq === seq) last.entries.push(e);
      else out.push({ seq, entries: [e] });
    }
    return out;
  };
  return [regroup(entries.slice(0, half)), regroup(entries.slice(half))];
}
