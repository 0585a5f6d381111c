/**
 * The session source: the native `SessionStream` as an `AsyncIterable` of batches (the shape of
 * lancedb's nodejs RecordBatchIterator). The native reader runs ahead by a bounded number of
 * batches and waits while we are busy, so a slow consumer slows the reader and memory stays flat.
 * Leaving a `for await` early (break, throw) closes the stream: the source lock is released.
 */
import type { Output } from '../log.js';
import { call, native, type Binding } from './native.js';

export type SessionBatch = Binding.SessionBatch;
export type StoreInfo = Binding.StoreInfo;
export type BackupEntries = Binding.BackupEntries;
export type DamagedRecord = Binding.DamagedRecord;

export interface StoreSource {
  cryptoStorePath: string;
  passphrase: string;
}

/**
 * The reader recovers stores that Sled's own open refuses (a damaged unfinished snapshot, a log
 * that lost what its snapshot points to): the keys that can still be read are the ones most
 * worth saving. The user is told, once per command, what Sled would have refused.
 */
export function warnSledWouldRefuse(out: Output, reasons: readonly string[]): void {
  if (reasons.length === 0) return;
  out.warn(`Sled itself would refuse to open this store (${reasons.join('; ')}); every key that can still be read is read, and what cannot is reported as damaged`);
}

/** Keys that already exist as a file (`upload --from`): extracted-keys.json, a JSON array, an Element export. */
export interface KeyFileSource {
  keyFile: string;
  exportPassphrase?: string;
}

export type KeySource = StoreSource | KeyFileSource;

export function describeSource(source: KeySource): string {
  return 'keyFile' in source ? source.keyFile : 'store';
}

export type StreamMode =
  | { mode: 'exported' }
  | { mode: 'digest' }
  | { mode: 'backup'; backupPublicKey: string };

export interface StreamTuning {
  batchSize?: number;
  readAhead?: number;
  /** Where to resume (migration-state.json): a hex Sled key, or an element index in a key file. */
  startAfter?: string;
}

/** Native readers still holding the store's lock: closed on Ctrl-C or SIGTERM. */
const open = new Set<{ close(): void }>();

/** Closes `reader` on Ctrl-C or SIGTERM until the returned function is called. */
export function closeOnSignal(reader: { close(): void }): () => void {
  open.add(reader);
  return () => open.delete(reader);
}

export class SessionBatches implements AsyncIterable<SessionBatch> {
  private constructor(private readonly stream: Binding.SessionStream) {}

  static async open(source: KeySource, mode: StreamMode, tuning: StreamTuning = {}): Promise<SessionBatches> {
    const backupPublicKey = mode.mode === 'backup' ? mode.backupPublicKey : undefined;
    if ('keyFile' in source) {
      if (mode.mode === 'exported') throw new TypeError('a key file is already exported keys');
      const stream = await call(() =>
        native().openKeyFileStream({ path: source.keyFile, exportPassphrase: source.exportPassphrase, mode: mode.mode, backupPublicKey, ...tuning }),
      );
      open.add(stream);
      return new SessionBatches(stream);
    }
    const stream = await call(() =>
      native().openSessionStream({
        cryptoStorePath: source.cryptoStorePath,
        passphrase: source.passphrase,
        mode: mode.mode,
        backupPublicKey,
        batchSize: tuning.batchSize,
        readAhead: tuning.readAhead,
        startAfter: tuning.startAfter,
      }),
    );
    open.add(stream);
    return new SessionBatches(stream);
  }

  get info(): StoreInfo {
    return this.stream.info;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<SessionBatch> {
    try {
      for (;;) {
        const batch = await call(() => this.stream.next());
        if (!batch) return;
        yield batch;
      }
    } finally {
      this.close();
    }
  }

  close(): void {
    this.stream.close();
    open.delete(this.stream);
  }
}

/** On Ctrl-C or SIGTERM, close every native reader so the working copies are removed before exit. */
export function closeAllStreams(): void {
  for (const reader of open) reader.close();
  open.clear();
}
