/**
 * merge: every room key of the old Sled store (or of a key file) into the SQLite store the upgraded
 * bot already runs on, keeping its account and device. The work is native (crates/sqlite-convert
 * merge.rs, on matrix-sdk-crypto / matrix-sdk-sqlite 0.9.0's own key import) on its own thread;
 * here we show its progress and list what was left behind.
 */
import type { Output } from '../log.js';
import { JsonArrayFile } from '../migration/json-array-file.js';
import { call, native } from '../store/native.js';
import { warnSledWouldRefuse, type KeySource } from '../store/sessions.js';
import type { ConvertedDamage } from './convert.js';

/** What crates/sqlite-convert reports (merge.rs `MergeReport`): counts, IDs, public keys; never key material. */
export interface MergeReport {
  dry_run: boolean;
  user_id: string;
  device_id: string;
  curve25519: string;
  ed25519: string;
  sled_account: { user_id: string; device_id: string; ed25519: string } | null;
  republishes_device_keys: boolean;
  source: string;
  read: number;
  added: number;
  already_present: number;
  improved: number;
  damaged: ConvertedDamage[];
  room_keys_before: number;
  room_keys_after: number;
  written: string | null;
  kept_as: string | null;
  sled_would_refuse: string[];
}

export interface MergeOptions {
  /** Where the SQLite store is; the keys come from its Sled store unless `from` names a key file. */
  cryptoStorePath: string;
  source: KeySource;
  sqlitePassphrase: string;
  dryRun: boolean;
  skipErrors: boolean;
  force: boolean;
  failedOutputPath: string;
  out: Output;
}

export async function mergeKeys(opts: MergeOptions): Promise<MergeReport> {
  const { out, source } = opts;
  const job = await call(() =>
    native().startMerge({
      cryptoStorePath: opts.cryptoStorePath,
      passphrase: 'passphrase' in source ? source.passphrase : undefined,
      sqlitePassphrase: opts.sqlitePassphrase,
      keyFile: 'keyFile' in source ? source.keyFile : undefined,
      exportPassphrase: 'keyFile' in source ? source.exportPassphrase : undefined,
      dryRun: opts.dryRun,
      skipErrors: opts.skipErrors,
      force: opts.force,
    }),
  );
  const bar = out.progress(opts.dryRun ? 'comparing room keys' : 'merging room keys');
  const poll = setInterval(() => bar.update(job.progress().done), 200);
  let report: MergeReport;
  try {
    report = JSON.parse(await call(() => job.wait())) as MergeReport;
  } finally {
    clearInterval(poll);
    bar.end();
  }
  warnSledWouldRefuse(out, report.sled_would_refuse);
  if (report.damaged.length > 0) {
    const failed = await JsonArrayFile.create<ConvertedDamage>(opts.failedOutputPath, { version: 1, command: 'merge' }, 'failed');
    for (const d of report.damaged) await failed.push(d);
    await failed.commit({ total_failed: report.damaged.length });
  }
  return report;
}
