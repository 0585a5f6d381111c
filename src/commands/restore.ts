import { Command, Option } from 'clipanion';
import { restoreStore } from '../migration/store-backup.js';
import { BaseCommand } from './base.js';

export class RestoreCommand extends BaseCommand {
  static override paths = [['restore']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'Roll back: put a verified backup of the Sled store back in place (the current store is renamed, never deleted)',
    details:
      'Checks every file of the backup against checksums.sha256 first and refuses on any mismatch. Refuses while the bot runs. The current crypto store folder is renamed to <folder>.before-restore-<timestamp>; the backup is copied beside it, read back and verified, then renamed into place.',
  });

  from = Option.String('--from', { description: 'The backup folder (default: the newest complete migration-backup-* in MIGRATION_DIR)' });
  dryRun = Option.Boolean('--dry-run', false, { description: 'Verify the backup and say what would happen, change nothing' });

  protected async perform(): Promise<number> {
    const loc = this.locations();
    const plan = await restoreStore({ from: this.from, cryptoStorePath: loc.cryptoStorePath, migrationDir: loc.migrationDir, dryRun: this.dryRun, out: this.out });
    this.record({ dry_run: this.dryRun, backup_dir: plan.backup, files: plan.metadata.files, target: plan.target, moved_aside: plan.movedAside ?? null });
    if (this.dryRun) {
      this.out.result(`dry run: the backup ${plan.backup} is intact (${plan.metadata.files} files, every checksum matches)`);
      this.out.result(plan.movedAside ? `would move the current store ${plan.target} to ${plan.movedAside}` : `would create ${plan.target} (no store there now)`);
      this.out.result(`would restore ${plan.backup} into ${plan.target} and verify it; nothing was changed`);
      return 0;
    }
    this.out.result(`restored ${plan.target} from ${plan.backup} (verified against its checksums)`);
    this.out.result(plan.movedAside ? `the store that was there is kept at ${plan.movedAside}` : 'there was no store there before');
    return 0;
  }
}
