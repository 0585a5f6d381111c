/**
 * The backup key in MIGRATION_DIR: recovery-key.txt (both forms, labelled), backup-private-key.bin
 * (the raw 32 bytes) and backup-public-key.txt. Written 0600 in a 0700 folder, atomically, and
 * BEFORE the backup version is created on the server, so a key is never in use without a copy.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { MIGRATION_FILES } from '../config.js';
import { ToolError } from '../errors.js';
import { call, native, type Binding } from '../store/native.js';
import { ensurePrivateDir, writeFileAtomic } from './atomic-file.js';

export type BackupKey = Binding.BackupKey;

export function keyPaths(migrationDir: string) {
  return {
    recoveryKey: path.join(migrationDir, MIGRATION_FILES.recoveryKey),
    privateKey: path.join(migrationDir, MIGRATION_FILES.privateKey),
    publicKey: path.join(migrationDir, MIGRATION_FILES.publicKey),
  };
}

export function recoveryKeyText(key: BackupKey, context: { userId?: string; version?: string }): string {
  return [
    `# Matrix server-side key backup: the key that decrypts it${context.userId ? ` (${context.userId})` : ''}.`,
    '# Store it in a password manager or secret store, then delete this file from the bot\'s volume.',
    '# Give the bot ONE of the two lines\' values: newer builds accept either form, older ones only base64.',
    `recovery_key: ${key.recoveryKey}`,
    `recovery_key_base64: ${key.privateKeyBase64}`,
    '',
  ].join('\n');
}

export async function writeKeyFiles(migrationDir: string, key: BackupKey, context: { userId?: string }): Promise<void> {
  await ensurePrivateDir(migrationDir);
  const p = keyPaths(migrationDir);
  await writeFileAtomic(p.privateKey, key.privateKey);
  await writeFileAtomic(p.recoveryKey, recoveryKeyText(key, context));
  await writeFileAtomic(p.publicKey, key.publicKey + '\n', 0o644);
}

/** Our key, from backup-private-key.bin (or recovery-key.txt), or null when neither exists. */
export async function readKeyFiles(migrationDir: string): Promise<BackupKey | null> {
  const p = keyPaths(migrationDir);
  const raw = await fs.readFile(p.privateKey).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  if (raw) {
    if (raw.length !== 32) {
      throw new ToolError('BACKUP_KEY_MISMATCH', `${p.privateKey} holds ${raw.length} bytes, not a 32-byte backup key`, 'restore the file from where you saved the recovery key, or remove the key files to start a new backup');
    }
    return call(() => native().backupKeyFromPrivateKey(raw));
  }
  const text = await fs.readFile(p.recoveryKey, 'utf8').catch(() => null);
  if (text) return parseRecoveryKeyText(text, p.recoveryKey);
  return null;
}

/** Accepts our labelled file or a file holding just the key, in either form. */
export async function parseRecoveryKeyText(text: string, where: string): Promise<BackupKey> {
  const labelled = /^recovery_key:\s*(.+)$/m.exec(text)?.[1] ?? /^recovery_key_base64:\s*(.+)$/m.exec(text)?.[1];
  const candidate = (labelled ?? text.split('\n').filter((l) => l.trim() && !l.startsWith('#')).join(' ')).trim();
  try {
    return await call(() => native().backupKeyFromText(candidate));
  } catch {
    throw new ToolError('BACKUP_KEY_MISMATCH', `${where} does not hold a valid recovery key`, 'restore the file from where you saved the recovery key (48 base58 characters starting with Es, or 43 base64 characters)');
  }
}
