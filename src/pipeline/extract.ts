/**
 * extract: store → extracted-keys.json (and failed-sessions.json). Strict by default: the first
 * damaged entry stops the run and nothing is left behind; with skipErrors every readable key is
 * written and the damaged entries are listed.
 */
import { ToolError } from '../errors.js';
import type { Output } from '../log.js';
import { writeFileAtomic } from '../migration/atomic-file.js';
import { JsonArrayFile } from '../migration/json-array-file.js';
import { call, native } from '../store/native.js';
import { SessionBatches, type DamagedRecord, type ExportedRoomKey, type StoreSource } from '../store/sessions.js';

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

/** The fields of an exported room key, in the order Element's key export uses. */
export function exportedKeyJson(k: ExportedRoomKey) {
  return {
    algorithm: k.algorithm,
    room_id: k.roomId,
    sender_key: k.senderKey,
    session_id: k.sessionId,
    session_key: k.sessionKey,
    sender_claimed_keys: k.senderClaimedKeys,
    forwarding_curve25519_key_chain: k.forwardingCurve25519KeyChain,
  };
}

export function damagedJson(d: DamagedRecord) {
  return { position: d.position, key_hex: d.keyHex, kind: d.kind, message: d.message };
}

export async function extractKeys(opts: ExtractOptions): Promise<ExtractSummary> {
  const { out } = opts;
  const batches = await SessionBatches.open(opts.source, { mode: 'exported' });
  out.verbose(`store: version ${batches.info.storeVersion ?? 'unknown'}, cipher ${batches.info.cipherFormat ?? 'none'}, device ${batches.info.deviceId ?? 'unknown'}`);
  const keysFile = opts.format === 'json' ? await JsonArrayFile.create<unknown>(opts.outputPath, { version: 1 }, 'keys') : new MegolmExportFile(opts.outputPath, opts.exportPassphrase ?? '');
  let failedFile: JsonArrayFile<unknown> | undefined;
  const summary: ExtractSummary = { succeeded: 0, failed: 0, total: 0, perRoom: new Map() };
  const progress = out.progress('extracting');
  try {
    for await (const batch of batches) {
      for (const damaged of batch.damaged) {
        if (!opts.skipErrors) {
          throw new ToolError(
            'DAMAGED_ENTRIES',
            `entry ${damaged.position} (Sled key ${damaged.keyHex.slice(0, 24)}…) is damaged: ${damaged.kind}: ${damaged.message}`,
            `rerun with --skip-errors to export every readable key and list the damaged ones in ${opts.failedOutputPath}`,
          );
        }
        failedFile ??= await JsonArrayFile.create<unknown>(opts.failedOutputPath, { version: 1 }, 'failed');
        await failedFile.push(damagedJson(damaged));
        summary.failed++;
        out.verbose(`damaged entry ${damaged.position}: ${damaged.kind}: ${damaged.message}`);
      }
      for (const key of batch.exported) {
        await keysFile.push(exportedKeyJson(key));
        summary.succeeded++;
        summary.perRoom.set(key.roomId, (summary.perRoom.get(key.roomId) ?? 0) + 1);
      }
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

class MegolmExportFile {
  private chunks: Buffer[] = [];

  constructor(
    private readonly target: string,
    private readonly passphrase: string,
  ) {}

  async push(item: unknown): Promise<void> {
    this.chunks.push(Buffer.from((this.chunks.length ? ',' : '[') + JSON.stringify(item)));
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
