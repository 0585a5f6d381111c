/**
 * The session source: the native `SessionStream` as an `AsyncIterable` of batches (the shape of
 * lancedb's nodejs RecordBatchIterator). The native reader runs ahead by a bounded number of
 * batches and waits while we are busy, so a slow consumer slows the reader and memory stays flat.
 * Leaving a `for await` early (break, throw) closes the stream: the working copy is removed and
 * the source lock released.
 */
import { call, native, type Binding } from './native.js';

export type SessionBatch = Binding.SessionBatch;
export type StoreInfo = Binding.StoreInfo;
export type ExportedRoomKey = Binding.ExportedRoomKey;
export type BackupEntry = Binding.BackupEntry;
export type DamagedRecord = Binding.DamagedRecord;

export interface StoreSource {
  cryptoStorePath: string;
  passphrase: string;
  workDir: string;
}

export type StreamMode =
  | { mode: 'exported' }
  | { mode: 'digest' }
  | { mode: 'backup'; backupPublicKey: string };

export interface StreamTuning {
  batchSize?: number;
  readAhead?: number;
  /** Hex Sled key to resume after (migration-state.json). */
  startAfter?: string;
}

const open = new Set<Binding.SessionStream>();

export class SessionBatches implements AsyncIterable<SessionBatch> {
  private constructor(private readonly stream: Binding.SessionStream) {}

  static async open(source: StoreSource, mode: StreamMode, tuning: StreamTuning = {}): Promise<SessionBatches> {
    const stream = await call(() =>
      native().openSessionStream({
        cryptoStorePath: source.cryptoStorePath,
        passphrase: source.passphrase,
        workDir: source.workDir,
        mode: mode.mode,
        backupPublicKey: mode.mode === 'backup' ? mode.backupPublicKey : undefined,
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

/** On Ctrl-C or SIGTERM, close every stream so the working copies are removed before exit. */
export function closeAllStreams(): void {
  for (const stream of open) stream.close();
  open.clear();
}
