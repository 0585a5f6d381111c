/**
 * convert: Sled store → CRYPTO_STORE_PATH/matrix-sdk-crypto.sqlite3, the store matrix-bot-sdk 0.8
 * opens, keeping the bot's device. The work is native (crates/sqlite-convert, on the genuine
 * matrix-sdk-crypto / matrix-sdk-sqlite 0.9.0) on its own thread; here we show its progress and
 * list what was left behind.
 */
import type { Output } from '../log.js';
import type { MergeReport } from './merge.js';
import { JsonArrayFile } from '../migration/json-array-file.js';
import { call, native } from '../store/native.js';
import { warnSledWouldRefuse, type StoreSource } from '../store/sessions.js';

export interface TreeCount {
  tree: string;
  converted: number;
  damaged: number;
  left_behind: number;
  reason: string | null;
}

export interface ConvertedDamage {
  tree: string;
  position: number;
  key_hex: string;
  kind: string;
  message: string;
}

/** What crates/sqlite-convert reports (report.rs): counts, IDs, public keys; never key material. */
export interface ConvertReport {
  dry_run: boolean;
  user_id: string;
  device_id: string;
  bot_sdk_device_id: string | null;
  curve25519: string;
  ed25519: string;
  existing_sqlite_store: 'none' | 'without-account' | 'with-account' | 'unreadable';
  trees: TreeCount[];
  damaged: ConvertedDamage[];
  distinct_room_keys: number;
  backup_version: string | null;
  has_backup_key: boolean;
  has_cross_signing_identity: boolean;
  written: string | null;
  moved_aside: string | null;
  /** The store moved aside was a new account under the same device ID: its keys merged back. */
  same_device_repair: MergeReport | null;
  sled_would_refuse: string[];
}

export interface ConvertOptions {
  source: StoreSource;
  /** Absent: "", what matrix-bot-sdk 0.8 passes to OlmMachine.initialize. */
  sqlitePassphrase?: string;
  /** Who the bot's access token belongs to (whoami): the run is refused unless it is the store's. */
  tokenOwner?: { userId: string; deviceId?: string };
  dryRun: boolean;
  skipErrors: boolean;
  force: boolean;
  failedOutputPath: string;
  out: Output;
}

const STAGE_LABELS: Record<string, string> = {
  inbound_group_sessions: 'converting room keys',
  session: 'converting Olm sessions',
};

export async function convertStore(opts: ConvertOptions): Promise<ConvertReport> {
  const { out } = opts;
  const job = await call(() =>
    native().startConvert({
      cryptoStorePath: opts.source.cryptoStorePath,
      passphrase: opts.source.passphrase,
      sqlitePassphrase: opts.sqlitePassphrase,
      tokenUserId: opts.tokenOwner?.userId,
      tokenDeviceId: opts.tokenOwner?.deviceId,
      dryRun: opts.dryRun,
      skipErrors: opts.skipErrors,
      force: opts.force,
    }),
  );
  const bars = new Map<string, ReturnType<Output['progress']>>();
  const poll = setInterval(() => {
    const p = job.progress();
    if (STAGE_LABELS[p.stage]) {
      let bar = bars.get(p.stage);
      if (!bar) {
        for (const other of bars.values()) other.end();
        bar = out.progress(STAGE_LABELS[p.stage]!);
        bars.set(p.stage, bar);
      }
      bar.update(p.done);
    }
  }, 200);
  let report: ConvertReport;
  try {
    report = JSON.parse(await call(() => job.wait())) as ConvertReport;
  } finally {
    clearInterval(poll);
    for (const bar of bars.values()) bar.end();
  }
  warnSledWouldRefuse(out, report.sled_would_refuse);
  if (report.damaged.length > 0) {
    const failed = await JsonArrayFile.create<ConvertedDamage>(opts.failedOutputPath, { version: 1, command: 'convert' }, 'failed');
    for (const d of report.damaged) await failed.push(d);
    await failed.commit({ total_failed: report.damaged.length });
  }
  return report;
}
