/**
 * Backups of the Sled crypto store, and the rollback that puts one back.
 *
 * A backup is `MIGRATION_DIR/migration-backup-YYYYMMDD-HHMMSS/` holding `crypto-store-sled/` (the
 * whole crypto store folder), `checksums.sha256` (`sha256sum -c` accepts it inside the folder) and
 * `metadata.json`. It is built under the same name with `.incomplete` appended and renamed only
 * when everything is written and fsynced, so a killed backup can never pass for a complete one.
 * The bytes are copied and hashed natively in one pass (crates/tree-copy).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ToolError, isToolError } from '../errors.js';
import { formatBytes, type Output } from '../log.js';
import { call, native, type Binding } from '../store/native.js';
import { SessionBatches } from '../store/sessions.js';
import { PRIVATE_DIR, ensurePrivateDir, fsyncDir, writeFileAtomic } from './atomic-file.js';

export const BACKUP_STORE_FOLDER = 'crypto-store-sled';
export const CHECKSUMS_FILE = 'checksums.sha256';
export const METADATA_FILE = 'metadata.json';
const NAME = /^migration-backup-(\d{8})-(\d{6})$/;
const INCOMPLETE_SUFFIX = '.incomplete';

export interface BackupMetadata {
  complete: true;
  tool: string;
  tool_version: string;
  source: string;
  files: number;
  bytes: number;
  cloned_files: number;
  /** null when reading it would have needed a second full copy of a big store. */
  store_version: number | null;
  store_cipher: 'present' | 'absent' | null;
  store_info_note?: string;
  started_at: string;
  finished_at: string;
  duration_s: number;
}

export interface BackupResult {
  dir: string;
  metadata: BackupMetadata;
}

/** Runs a native copy or verify job with a byte progress bar; cancelled on Ctrl-C. */
async function runJob(job: Binding.TreeJob, label: string, out: Output): Promise<Binding.TreeJobResult> {
  const progress = out.progress(label, { bytes: true });
  const tick = setInterval(() => {
    const p = job.progress();
    progress.update(p.bytesDone, p.bytesTotal || undefined);
  }, 250);
  const cancel = () => job.cancel();
  process.once('SIGINT', cancel);
  process.once('SIGTERM', cancel);
  try {
    return await call(() => job.wait());
  } finally {
    clearInterval(tick);
    process.off('SIGINT', cancel);
    process.off('SIGTERM', cancel);
    const p = job.progress();
    progress.update(p.bytesDone, p.bytesTotal || undefined);
    progress.end();
  }
}

/** Holds the store's lock (the bot cannot start meanwhile); refuses while the bot runs unless forced. */
async function lockStore(cryptoStorePath: string, force: boolean, forceName: string, out: Output): Promise<Binding.StoreLock | undefined> {
  try {
    return await call(() => native().lockStore(cryptoStorePath));
  } catch (e) {
    if (isToolError(e) && e.code === 'STORE_LOCKED' && force) {
      out.warn(`the store is in use (the bot is running); ${forceName}=1 given: copying a store that may change under us`);
      return undefined;
    }
    if (isToolError(e) && e.code === 'STORE_LOCKED') {
      throw new ToolError('STORE_LOCKED', `${cryptoStorePath} is in use: the bot holds Sled's lock on matrix-sdk-crypto/db`, `stop the bot and rerun${forceName === 'FORCE_BACKUP' ? ' (or set FORCE_BACKUP=1 to copy it anyway)' : ''}`);
    }
    throw e;
  }
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await treeBytes(p);
    else if (entry.isFile()) total += (await fs.stat(p)).size;
  }
  return total;
}

async function checkStoreFolder(cryptoStorePath: string): Promise<void> {
  const db = path.join(cryptoStorePath, 'matrix-sdk-crypto', 'db');
  try {
    await fs.access(db);
  } catch {
    throw new ToolError('STORE_NOT_FOUND', `${cryptoStorePath} holds no Sled store (no matrix-sdk-crypto/db)`, 'point CRYPTO_STORE_PATH or STORAGE_PATH at the bot\'s crypto store');
  }
}

function timestampName(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `migration-backup-${p(d.getFullYear(), 4)}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** Store version and cipher, read through the normal reader (which only recovers the store here). */
async function storeInfo(cryptoStorePath: string, passphrase: string) {
  try {
    const batches = await SessionBatches.open({ cryptoStorePath, passphrase }, { mode: 'digest' });
    const info = batches.info;
    batches.close();
    return { store_version: info.storeVersion ?? null, store_cipher: info.cipherFormat ? 'present' : 'absent' } as const;
  } catch (e) {
    if (isToolError(e) && e.code === 'WRONG_PASSPHRASE') return { store_version: null, store_cipher: 'present', store_info_note: 'the store passphrase did not open the cipher' } as const;
    return { store_version: null, store_cipher: null, store_info_note: `not read: ${(e as Error).message}` } as const;
  }
}

export interface BackupOptions {
  cryptoStorePath: string;
  migrationDir: string;
  storePassphrase: string;
  force: boolean;
  toolVersion: string;
  out: Output;
}

export async function backupStore(opts: BackupOptions): Promise<BackupResult> {
  const { out } = opts;
  await checkStoreFolder(opts.cryptoStorePath);
  await ensurePrivateDir(opts.migrationDir);
  const lock = await lockStore(opts.cryptoStorePath, opts.force, 'FORCE_BACKUP', out);
  let staging: string | undefined;
  try {
    const bytes = await treeBytes(opts.cryptoStorePath);
    const available = native().availableSpace(opts.migrationDir);
    const needed = bytes + (64 << 20);
    if (available !== null && available !== undefined && available < needed) {
      throw new ToolError('MIGRATION_DIR', `${opts.migrationDir} has ${formatBytes(available)} free; the backup needs ${formatBytes(needed)}`, 'free space there or set MIGRATION_DIR to a folder with room');
    }
    let started = new Date();
    let name = timestampName(started);
    // Two backups in one second would share a name: wait for the next second rather than rename.
    while (await exists(path.join(opts.migrationDir, name)) || (await exists(path.join(opts.migrationDir, name + INCOMPLETE_SUFFIX)))) {
      await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
      started = new Date();
      name = timestampName(started);
    }
    staging = path.join(opts.migrationDir, name + INCOMPLETE_SUFFIX);
    await fs.mkdir(staging, { mode: PRIVATE_DIR });
    out.info(`backing up ${opts.cryptoStorePath} (${formatBytes(bytes)}) into ${path.join(opts.migrationDir, name)}`);
    const t0 = process.hrtime.bigint();
    const report = await runJob(native().startTreeCopy(opts.cryptoStorePath, path.join(staging, BACKUP_STORE_FOLDER)), 'copying and hashing', out);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const files = report.files.map((f) => ({ ...f, path: `${BACKUP_STORE_FOLDER}/${f.path}` }));
    await writeFileAtomic(path.join(staging, CHECKSUMS_FILE), native().formatChecksums(files));
    const info = await storeInfo(opts.cryptoStorePath, opts.storePassphrase);
    const metadata: BackupMetadata = {
      complete: true,
      tool: 'sled-migration-tool',
      tool_version: opts.toolVersion,
      source: opts.cryptoStorePath,
      files: report.files.length,
      bytes: report.bytes,
      cloned_files: report.clonedFiles,
      ...info,
      started_at: started.toISOString(),
      finished_at: new Date().toISOString(),
      duration_s: Math.round(seconds * 1000) / 1000,
    };
    await writeFileAtomic(path.join(staging, METADATA_FILE), JSON.stringify(metadata, null, 2) + '\n');
    const dir = path.join(opts.migrationDir, name);
    await fs.rename(staging, dir);
    staging = undefined;
    await fsyncDir(opts.migrationDir);
    return { dir, metadata };
  } catch (e) {
    // Our own half-made copy goes; a killed run leaves it, named *.incomplete, which restore ignores.
    if (staging) await fs.rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  } finally {
    lock?.release();
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

export interface BackupCheck {
  dir: string;
  metadata: BackupMetadata;
  mismatches: Binding.ChecksumMismatch[];
  bytes: number;
}

/** A complete backup: the final name, metadata saying complete, a checksum list. */
export async function readBackup(dir: string): Promise<{ metadata: BackupMetadata; checksums: string }> {
  const base = path.basename(dir);
  if (base.endsWith(INCOMPLETE_SUFFIX)) {
    throw new ToolError('BACKUP_INVALID', `${dir} is an interrupted backup (its name ends in ${INCOMPLETE_SUFFIX})`, 'use a complete backup, or run `backup` again');
  }
  let metadata: BackupMetadata;
  let checksums: string;
  try {
    metadata = JSON.parse(await fs.readFile(path.join(dir, METADATA_FILE), 'utf8')) as BackupMetadata;
    checksums = await fs.readFile(path.join(dir, CHECKSUMS_FILE), 'utf8');
  } catch (e) {
    throw new ToolError('BACKUP_INVALID', `${dir} is not a complete backup (${METADATA_FILE} or ${CHECKSUMS_FILE} missing or unreadable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'give --from a migration-backup-YYYYMMDD-HHMMSS folder that `backup` completed');
  }
  if (metadata.complete !== true) throw new ToolError('BACKUP_INVALID', `${dir} is not marked complete`, 'use another backup');
  return { metadata, checksums };
}

/** Re-reads every byte of a backup and checks it against its list. */
export async function checkBackup(dir: string, out: Output, read?: { metadata: BackupMetadata; checksums: string }): Promise<BackupCheck> {
  const { metadata, checksums } = read ?? (await readBackup(dir));
  const result = await runJob(native().startTreeVerify(dir, checksums, [CHECKSUMS_FILE, METADATA_FILE], undefined), 'verifying', out);
  return { dir, metadata, mismatches: result.mismatches, bytes: result.bytes };
}

export function describeMismatches(m: Binding.ChecksumMismatch[]): string {
  const shown = m.slice(0, 5).map((x) => `${x.path} (${x.kind})`).join(', ');
  return m.length > 5 ? `${shown} and ${m.length - 5} more` : shown;
}

/** The newest complete backup in MIGRATION_DIR (by its timestamped name). */
export async function newestBackup(migrationDir: string): Promise<string> {
  let names: string[] = [];
  try {
    names = (await fs.readdir(migrationDir)).filter((n) => NAME.test(n)).sort().reverse();
  } catch {
    /* no folder: no backups */
  }
  for (const name of names) {
    const dir = path.join(migrationDir, name);
    try {
      await readBackup(dir);
      return dir;
    } catch {
      /* not complete: look further back */
    }
  }
  throw new ToolError('BACKUP_INVALID', `no complete backup in ${migrationDir}`, 'give --from the backup folder, or set MIGRATION_DIR to where `backup` wrote it');
}

export interface RestoreOptions {
  from?: string;
  cryptoStorePath: string;
  migrationDir: string;
  dryRun: boolean;
  out: Output;
}

export interface RestorePlan {
  backup: string;
  target: string;
  /** Where the current store goes (renamed, never deleted); undefined when there is none. */
  movedAside?: string;
  metadata: BackupMetadata;
}

export async function restoreStore(opts: RestoreOptions): Promise<RestorePlan> {
  const { out } = opts;
  const backup = path.resolve(opts.from ?? (await newestBackup(opts.migrationDir)));
  const target = opts.cryptoStorePath;
  const stamp = timestampName(new Date()).replace('migration-backup-', '');
  const current = await exists(target);
  const read = await readBackup(backup);
  const { checksums } = read;
  const plan: RestorePlan = { backup, target, movedAside: current ? `${target}.before-restore-${stamp}` : undefined, metadata: read.metadata };

  out.info(`checking every file of ${backup} against its checksums`);
  const check = await checkBackup(backup, out, read);
  if (check.mismatches.length) {
    throw new ToolError('BACKUP_INVALID', `${backup} does not match its checksums: ${describeMismatches(check.mismatches)}`, 'this backup cannot be trusted: restore another one (--from); nothing was changed');
  }
  const lock = current && (await exists(path.join(target, 'matrix-sdk-crypto', 'db'))) ? await lockStore(target, false, 'restore', out) : undefined;
  try {
    if (opts.dryRun) return plan;
    const parent = path.dirname(target);
    const incoming = path.join(parent, `.${path.basename(target)}.restoring-${stamp}`);
    await fs.rm(incoming, { recursive: true, force: true });
    try {
      await runJob(native().startTreeCopy(path.join(backup, BACKUP_STORE_FOLDER), incoming), 'restoring', out);
      // The result, read back from disk before it replaces anything; the rename below moves the
      // same files into place without touching their bytes.
      const copied = await runJob(native().startTreeVerify(incoming, checksums, [], BACKUP_STORE_FOLDER), 'verifying the result', out);
      if (copied.mismatches.length) {
        throw new ToolError('IO_ERROR', `the restored copy does not match the backup: ${describeMismatches(copied.mismatches)}`, 'check the disk; the current store was not touched');
      }
      if (plan.movedAside) await fs.rename(target, plan.movedAside);
      await fs.rename(incoming, target);
      await fsyncDir(parent);
    } catch (e) {
      await fs.rm(incoming, { recursive: true, force: true }).catch(() => undefined);
      throw e;
    }
    return plan;
  } finally {
    lock?.release();
  }
}

