import { Command, Option } from 'clipanion';
import { envFlag } from '../environment.js';
import { EXIT_CODES } from '../errors.js';
import { bodyLimits } from '../pipeline/body-size.js';
import { enableBackup } from '../steps/enable.js';
import { uploadStep } from '../steps/upload.js';
import { verifyStep } from '../steps/verify.js';
import { HomeserverCommand, keyFile } from './homeserver.js';
import { printUpload, uploadFields, uploadOptions } from './upload.js';
import { printReport, sampleOption, verifyFields } from './verify.js';

export class AllCommand extends HomeserverCommand {
  static override paths = [['all']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'enable → upload → verify; a rerun continues where the last run stopped',
  });

  forceNewBackup = Option.Boolean('--force-new-backup', false, { description: 'Replace an existing backup version without asking (FORCE_NEW_BACKUP=1)' });
  bodyLimit = uploadOptions().bodyLimit;
  maxBodyLimit = uploadOptions().maxBodyLimit;
  inFlight = uploadOptions().inFlight;
  skipErrors = uploadOptions().skipErrors;
  failedOutput = uploadOptions().failedOutput;
  restart = uploadOptions().restart;
  sample = sampleOption();

  protected async perform(): Promise<number> {
    const ctx = await this.stepContext();
    this.out.info('step 1/3: enable');
    const enabled = await enableBackup(ctx, { forceNewBackup: this.forceNewBackup || envFlag('FORCE_NEW_BACKUP') });
    this.out.result(`backup version ${enabled.version} ${enabled.created ? 'created' : 'reused'}`);
    this.record({ backup_version: enabled.version, created: enabled.created, recovery_key_file: keyFile(ctx.migrationDir) });
    this.out.info('step 2/3: upload');
    const uploaded = await uploadStep(ctx, { ...bodyLimits(this), inFlight: Math.max(1, this.inFlight), skipErrors: this.skipErrors, failedOutput: this.failedOutput, restart: this.restart });
    printUpload(this.out, uploaded);
    this.record(uploadFields(uploaded));
    this.out.info('step 3/3: verify');
    const report = await verifyStep(ctx, this.sample);
    printReport(this.out, report);
    this.record(verifyFields(report));
    return report.complete ? 0 : EXIT_CODES.VERIFY_INCOMPLETE;
  }
}
