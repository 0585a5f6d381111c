import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import type { Output } from '../log.js';
import type { UploadStepResult } from '../steps/upload.js';
import { uploadStep } from '../steps/upload.js';
import { bodyLimits } from '../pipeline/body-size.js';
import { HomeserverCommand } from './homeserver.js';
import { exportPassphraseFileOption, keyFileSource } from './export-passphrase.js';

/** Options shared by `upload` and `all`. */
export const uploadOptions = () => ({
  bodyLimit: Option.String('--body-limit', { validator: t.isNumber(), description: 'Request body size in bytes to start with (default 2 MiB). Bodies grow up to --max-body-limit while the homeserver spends more per request than per key (Synapse counts the whole backup for every answer); given alone, a fixed limit. Each 413 halves it, down to what a proxy in front of the homeserver allows' }),
  maxBodyLimit: Option.String('--max-body-limit', { validator: t.isNumber(), description: 'Largest request body in bytes the upload may grow to (default 12 MiB, or --body-limit when only that is given): the memory ceiling: a 1M-key upload peaked at 104 MB with 2 MiB bodies, 123 MB with 12 MiB' }),
  inFlight: Option.String('--in-flight', '2', { validator: t.isNumber(), description: 'Upload requests in flight (default 2)' }),
  skipErrors: Option.Boolean('--skip-errors', false, { description: 'Carry on past damaged entries and list them' }),
  failedOutput: Option.String('--failed-output', { description: 'Where damaged entries are listed (default: MIGRATION_DIR/failed-sessions.json)' }),
  restart: Option.Boolean('--restart', false, { description: 'Upload from the beginning even if a previous run completed or recorded a position' }),
});

export function printUpload(out: Output, r: UploadStepResult): void {
  if (r.alreadyComplete) return;
  for (const [room, count] of [...r.perRoom].sort((a, b) => b[1] - a[1])) out.verbose(`  ${room}: ${count}`);
  out.result(
    `uploaded ${r.sent} keys in ${r.requests} requests into backup version ${r.version}${r.resumed ? ' (resumed)' : ''}; server count ${r.serverCount}; ${r.perRoom.size} rooms; ${r.damaged} damaged entries skipped`,
  );
}

/** `upload`'s part of a `--json` result (also `all`'s). */
export function uploadFields(r: UploadStepResult): Record<string, unknown> {
  return {
    backup_version: r.version,
    upload: r.alreadyComplete
      ? { already_complete: true, sent: 0 }
      : { already_complete: false, resumed: r.resumed, sent: r.sent, requests: r.requests, server_count: r.serverCount, rooms: r.perRoom.size, damaged_skipped: r.damaged, final_body_limit: r.finalBodyLimit },
  };
}

export class UploadCommand extends HomeserverCommand {
  static override paths = [['upload']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'Encrypt every room key for the backup and upload it, streaming from the store (resumable)',
    details:
      'Streams from the Sled store: no intermediate file. Progress is recorded in migration-state.json after every acknowledged request; a rerun continues from there. With --from FILE the keys come from an extracted-keys.json, a JSON array of exported keys, or an Element key export instead (checked the same way: true session IDs, well-formed keys).',
  });

  from = Option.String('--from', { description: 'Upload the keys of this file instead of the store: extracted-keys.json, a JSON array of keys, or an Element key export' });
  exportPassphraseFile = exportPassphraseFileOption();

  bodyLimit = uploadOptions().bodyLimit;
  maxBodyLimit = uploadOptions().maxBodyLimit;
  inFlight = uploadOptions().inFlight;
  skipErrors = uploadOptions().skipErrors;
  failedOutput = uploadOptions().failedOutput;
  restart = uploadOptions().restart;

  protected async perform(): Promise<number> {
    const result = await uploadStep(await this.stepContext(), {
      ...bodyLimits(this),
      inFlight: Math.max(1, this.inFlight),
      skipErrors: this.skipErrors,
      failedOutput: this.failedOutput,
      restart: this.restart,
      from: this.from ? await keyFileSource(this.from, this.exportPassphraseFile) : undefined,
    });
    printUpload(this.out, result);
    this.record(uploadFields(result));
    return 0;
  }
}
