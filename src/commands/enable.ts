import { Command, Option } from 'clipanion';
import { envFlag } from '../environment.js';
import { enableBackup } from '../steps/enable.js';
import { HomeserverCommand, keyFile } from './homeserver.js';

export class EnableCommand extends HomeserverCommand {
  static override paths = [['enable']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'Create a server-side key backup version with a fresh key (or reuse ours)',
    details: 'Writes recovery-key.txt, backup-private-key.bin and backup-public-key.txt to MIGRATION_DIR (0600) before the version is created. An existing backup with another key is replaced only after a yes on a terminal or with FORCE_NEW_BACKUP=1.',
  });

  forceNewBackup = Option.Boolean('--force-new-backup', false, { description: 'Replace an existing backup version without asking (FORCE_NEW_BACKUP=1)' });

  protected async perform(): Promise<number> {
    const result = await enableBackup(await this.stepContext(), { forceNewBackup: this.forceNewBackup || envFlag('FORCE_NEW_BACKUP') });
    this.out.result(`backup version ${result.version} ${result.created ? 'created' : 'reused'}`);
    this.record({ backup_version: result.version, created: result.created, recovery_key_file: keyFile(this.locations().migrationDir) });
    return 0;
  }
}
