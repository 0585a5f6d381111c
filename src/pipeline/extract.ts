/**
 * extract: store → extracted-keys.json (and failed-sessions.json). Strict by default: the first
 * damaged entry stops the run and nothing is left behind; with skipErrors every readable key is
 * written and the damaged entries are listed.
 */
import { damagedEntryError, damagedJson } from './damaged.js';
import type { Output } from '../log.js';
import { writeFileAtomic } from '../migration/atomic-file.js';
import { JsonArrayFile } from '../migration/json-array-file.js';
import { call, native } from '../store/native.js';
import { SessionBatches, warnSledWouldRefuse, type DamagedRecord, type StoreSource } from '../store/sessions.js';

export interface ExtractOptions {
  source: StoreSource;
  outputPath: string;
  /** `json`: extracted-keys.json; `megolm-export`: Element's encrypted key export file. */
  format: 'json' | 'megolm-export';
  exportPassphrase?: string;
  skipErrors: boolean;
  failedOutputPath: string;
  out: Output;
}

export interface ExtractSummary {
  succeeded: number;
  failed: number;
  total: number;
  perRoom: Map<string, number>;
}

/** Where natively serialized keys go: extracted-keys.json or an Element export. */
interface KeysSink {
  pushSerialized(elements: Buffer, count: number): Promise<void>;
  commit(trailer: Record<string, unknown>): Promise<void>;
  abort(): Promise<void>;
}

export async function extractKeys(opts: ExtractOptions): Promise<ExtractSummary> {
  const { out } = opts;
  const batches = await SessionBatches.open(opts.source, { mode: 'exported' });
  out.verbose(`store: version ${batches.info.storeVersion ?? 'unknown'}, cipher ${batches.info.cipherFormat ?? 'none'}, device ${batches.info.deviceId ?? 'unknown'}`);
  warnSledWouldRefuse(out, batches.info.sledWouldRefuse);
  const keysFile: KeysSink =
    opts.format === 'json' ? await JsonArrayFile.create<unknown>(opts.outputPath, { version: 1 }, 'keys') : new MegolmExportFile(opts.outputPath, opts.exportPassphrase ?? '');
  let failedFile: JsonArrayFile<unknown> | undefined;
  const summary: ExtractSummary = { succeeded: 0, failed: 0, total: 0, perRoom: new Map() };
  const progress = out.progress('extracting');
  try {
    for await (const batch of batches) {
      for (const damaged of batch.damaged) {
        if (!opts.skipErrors) {
          throw damagedEntryError(damaged, `rerun with --skip-errors to export every readable key and list the damaged ones in ${opts.failedOutputPath}`);
        }
        failedFile ??= await JsonArrayFile.create<unknown>(opts.failedOutputPath, { version: 1 }, 'failed');
        await failedFile.push(damagedJson(damaged));
        summary.failed++;
        out.verbose(`damaged entry ${damaged.position}: ${damaged.kind}: ${damaged.message}`);
      }
      if (batch.exportedJson) await keysFile.pushSerialized(batch.exportedJson, batch.exportedRooms.length);
      for (const room of batch.exportedRooms) summary.perRoom.set(room, (summary.perRoom.get(room) ?? 0) + 1);
      summary.succeeded += batch.exportedRooms.length;
      summary.total = summary.succeeded + summary.failed;
      progress.update(summary.total);
    }
    progress.end();
    await keysFile.commit({ total_keys: summary.succeeded, failed_keys: summary.failed });
    await failedFile?.commit({ total_failed: summary.failed });
    return summary;
  } catch (e) {
    progress.end();
    batches.close();
    await keysFile.abort();
    await failedFile?.abort();
    throw e;
  }
}

/**
 * Element's "MEGOLM SESSION DATA" file: the safer way to carry keys (encrypted under a passphrase).
 * The format is one authenticated blob, so the plaintext JSON is assembled in memory (about 0.6 KB
 * per key) and wiped after encryption; the encryption itself is native (megolm-backup crate).
 */
export const EXPORT_ROUNDS = 500_000;

class MegolmExportFile implements KeysSink {
  private chunks: Buffer[] = [];

  constructor(
    private readonly target: string,
    private readonly passphrase: string,
  ) {}

  async pushSerialized(elements: Buffer, count: number): Promise<void> {
    if (count === 0) return;
    this.chunks.push(Buffer.from(this.chunks.length ? ',' : '['), elements);
  }

  async commit(): Promise<void> {
    this.chunks.push(Buffer.from(this.chunks.length ? ']' : '[]'));
    const plaintext = Buffer.concat(this.chunks);
    for (const c of this.chunks) c.fill(0);
    this.chunks = [];
    try {
      const text = await call(() => native().encryptMegolmExport(plaintext, this.passphrase, EXPORT_ROUNDS));
      await writeFileAtomic(this.target, text);
    } finally {
      plaintext.fill(0);
    }
  }

  async abort(): Promise<void> {
    for (const c of this.chunks) c.fill(0);
    this.chunks = [];
  }
}
