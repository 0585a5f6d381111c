import path from 'node:path';
import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { MIGRATION_FILES } from '../config.js';
import { extractKeys } from '../pipeline/extract.js';
import { ensurePrivateDir } from '../migration/atomic-file.js';
import { BaseCommand } from './base.js';
import { exportPassphrase, exportPassphraseFileOption } from './export-passphrase.js';

export class ExtractCommand extends BaseCommand {
  static override paths = [['extract']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'Write every room key of the Sled store to extracted-keys.json (plaintext keys: keep it safe)',
    details: 'Strict by default: the first damaged entry stops the run and no output is left behind. With --skip-errors every readable key is written and the damaged entries are listed in failed-sessions.json. The upload command does not need this file: it streams from the store.',
  });

  output = Option.String('--output,-o', { description: 'Output file (default: MIGRATION_DIR/extracted-keys.json)' });
  skipErrors = Option.Boolean('--skip-errors', false, { description: 'Carry on past damaged entries and list them' });
  failedOutput = Option.String('--failed-output', { description: 'Where damaged entries are listed (default: MIGRATION_DIR/failed-sessions.json)' });
  format = Option.String('--format', 'json', { validator: t.isEnum(['json', 'megolm-export'] as const), description: 'json (extracted-keys.json) or megolm-export (Element\'s encrypted "MEGOLM SESSION DATA" file)' });
  exportPassphraseFile = exportPassphraseFileOption();

  protected async perform(): Promise<number> {
    const loc = this.locations();
    await ensurePrivateDir(loc.migrationDir);
    const megolm = this.format === 'megolm-export';
    const outputPath = path.resolve(this.output ?? path.join(loc.migrationDir, megolm ? MIGRATION_FILES.megolmExport : MIGRATION_FILES.extractedKeys));
    const passphrase = megolm ? await exportPassphrase(this.exportPassphraseFile, true) : undefined;
    const failedOutputPath = path.resolve(this.failedOutput ?? path.join(loc.migrationDir, MIGRATION_FILES.failedSessions));
    const summary = await extractKeys({
      source: { cryptoStorePath: loc.cryptoStorePath, passphrase: loc.storePassphrase },
      outputPath,
      format: this.format,
      exportPassphrase: passphrase,
      skipErrors: this.skipErrors,
      failedOutputPath,
      out: this.out,
    });
    for (const [room, count] of [...summary.perRoom].sort((a, b) => b[1] - a[1])) this.out.verbose(`  ${room}: ${count}`);
    this.record({
      format: this.format,
      output: outputPath,
      succeeded: summary.succeeded,
      failed: summary.failed,
      total: summary.total,
      rooms: summary.perRoom.size,
      ...(summary.failed > 0 ? { failed_output: failedOutputPath } : {}),
    });
    this.out.result(`${summary.succeeded} succeeded, ${summary.failed} failed out of ${summary.total} total`);
    this.out.info(megolm ? `wrote ${outputPath} (Element key export, encrypted with your passphrase)` : `wrote ${outputPath} (mode 0600: it holds plaintext room keys)`);
    if (summary.failed > 0) this.out.info(`damaged entries listed in ${failedOutputPath}`);
    return 0;
  }
}
