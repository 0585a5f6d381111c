import path from 'node:path';
import { Command, Option } from 'clipanion';
import { envFlag } from '../environment.js';
import { ToolError } from '../errors.js';
import { formatBytes, formatDuration } from '../log.js';
import { backupStore, checkBackup, describeMismatches, newestBackup, CHECKSUMS_FILE } from '../migration/store-backup.js';
import { TOOL_VERSION } from '../version.js';
import { BaseCommand } from './base.js';

export class BackupCommand extends BaseCommand {
  static override paths = [['backup']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'Copy the whole crypto store into MIGRATION_DIR/migration-backup-YYYYMMDD-HHMMSS/ with SHA-256 checksums',
    details:
      'Every byte is read once: copied and hashed in the same pass (cloned where the filesystem has reflinks). checksums.sha256 is accepted by `sha256sum -c` run inside the backup folder. Refuses while the bot runs unless FORCE_BACKUP=1. An interrupted backup is left as *.incomplete, which restore never takes. With --verify, re-reads a backup (--from, default the newest) and checks it instead.',
  });

  force = Option.Boolean('--force-backup', false, { description: 'Copy even while the bot holds the store (FORCE_BACKUP=1)' });
  verify = Option.Boolean('--verify', false, { description: 'Check an existing backup against its checksums instead of making one' });
  from = Option.String('--from', { description: 'With --verify: the backup folder (default: the newest in MIGRATION_DIR)' });

  protected async perform(): Promise<number> {
    if (this.verify) return this.verifyExisting();
    const loc = this.locations();
    const { dir, metadata } = await backupStore({
      cryptoStorePath: loc.cryptoStorePath,
      migrationDir: loc.migrationDir,
      storePassphrase: loc.storePassphrase,
      force: this.force || envFlag('FORCE_BACKUP'),
      toolVersion: TOOL_VERSION,
      out: this.out,
    });
    const rate = metadata.duration_s > 0 ? ` (${formatBytes(metadata.bytes / metadata.duration_s)}/s${metadata.cloned_files ? `, ${metadata.cloned_files} files cloned` : ''})` : '';
    this.out.result(`backup complete: ${dir}`);
    this.out.result(`${metadata.files} files, ${formatBytes(metadata.bytes)} in ${formatDuration(metadata.duration_s)}${rate}`);
    this.out.info(`check it any time: cd ${dir} && sha256sum -c ${CHECKSUMS_FILE}`);
    this.record({ backup_dir: dir, files: metadata.files, bytes: metadata.bytes, cloned_files: metadata.cloned_files, duration_s: metadata.duration_s });
    return 0;
  }

  private async verifyExisting(): Promise<number> {
    const loc = this.locations();
    const dir = path.resolve(this.from ?? (await newestBackup(loc.migrationDir)));
    const check = await checkBackup(dir, this.out);
    if (check.mismatches.length) {
      throw new ToolError('BACKUP_INVALID', `${dir} does not match its checksums: ${describeMismatches(check.mismatches)}`, 'do not restore from this backup; make a new one while the old store is intact');
    }
    this.record({ backup_dir: dir, files: check.metadata.files, bytes: check.metadata.bytes, verified: true });
    this.out.result(`backup verified: ${dir} (${check.metadata.files} files, ${formatBytes(check.metadata.bytes)}, every checksum matches)`);
    return 0;
  }
}
