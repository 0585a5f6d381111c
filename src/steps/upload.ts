/**
 * upload, as a step: check that the server's current backup is ours, resume from the recorded
 * position, run the pipeline, record progress after every acknowledged request.
 */
import path from 'node:path';
import { MIGRATION_FILES } from '../config.js';
import { ToolError } from '../errors.js';
import { currentBackup } from '../matrix/key-backup.js';
import { JsonArrayFile } from '../migration/json-array-file.js';
import { readKeyFiles } from '../migration/key-files.js';
import { damagedJson } from '../pipeline/damaged.js';
import { uploadKeys, type UploadSummary } from '../pipeline/upload.js';
import { describeSource, type KeyFileSource } from '../store/sessions.js';
import type { StepContext } from './context.js';

export interface UploadStepOptions {
  bodyLimit: number;
  maxBodyLimit: number;
  inFlight: number;
  skipErrors: boolean;
  failedOutput?: string;
  restart: boolean;
  /** Keys from a file instead of the store (`upload --from`). */
  from?: KeyFileSource;
}

export interface UploadStepResult extends UploadSummary {
  version: string;
  resumed: boolean;
  alreadyComplete: boolean;
}

/** Our key and the server's current version, refusing anything but the version enable recorded with our key. */
export async function ourCurrentBackup({ client, migrationDir, state }: Pick<StepContext, 'client' | 'migrationDir' | 'state'>) {
  const key = await readKeyFiles(migrationDir);
  const recorded = (await state.read()).backup;
  if (!key || !recorded) {
    throw new ToolError('NO_BACKUP', `no backup key or version recorded in ${migrationDir}`, 'run `enable` first (or `all`, which runs enable → upload → verify)');
  }
  const current = await currentBackup(client);
  if (!current || current.version !== recorded.version) {
    throw new ToolError(
      'WRONG_BACKUP_VERSION',
      `the server's current backup version is ${current?.version ?? 'none'}, not ${recorded.version} that enable created`,
      'another client changed the backup: run `enable` again (FORCE_NEW_BACKUP=1 to replace it), then rerun',
    );
  }
  if (current.auth_data.public_key !== key.publicKey) {
    throw new ToolError(
      'BACKUP_KEY_MISMATCH',
      `backup version ${current.version} does not use the key in ${path.join(migrationDir, MIGRATION_FILES.recoveryKey)}`,
      'never upload into a backup you cannot decrypt: run `enable` again to create a version with our key',
    );
  }
  return { key, version: current.version, serverCount: current.count };
}

export async function uploadStep(ctx: StepContext, opts: UploadStepOptions): Promise<UploadStepResult> {
  const { out } = ctx;
  const { key, version } = await ourCurrentBackup(ctx);
  const state = await ctx.state.read();
  const source = opts.from ?? ctx.source;
  const sourceName = describeSource(source);
  // A recorded position means something only for the version and the source it was recorded for.
  const previous = state.upload?.version === version && (state.upload.source ?? 'store') === sourceName && !opts.restart ? state.upload : undefined;
  if (previous?.completed) {
    out.info(`upload into version ${version} already completed (${previous.sessions_acknowledged} keys); pass --restart to upload again`);
    return { version, resumed: false, alreadyComplete: true, sent: 0, damaged: previous.damaged, requests: 0, serverCount: 0, perRoom: new Map(), finalBodyLimit: opts.bodyLimit };
  }
  if (previous) out.info(`resuming the upload into version ${version} after ${previous.sessions_acknowledged} acknowledged keys`);
  const base = { acknowledged: previous?.sessions_acknowledged ?? 0, damaged: previous?.damaged ?? 0 };

  let failed: JsonArrayFile<unknown> | undefined;
  const failedPath = opts.failedOutput ?? path.join(ctx.migrationDir, MIGRATION_FILES.failedSessions);
  try {
    const summary = await uploadKeys({
      client: ctx.client,
      version,
      publicKey: key.publicKey,
      source,
      startAfter: previous?.resume_after,
      bodyLimit: opts.bodyLimit,
      maxBodyLimit: opts.maxBodyLimit,
      inFlight: opts.inFlight,
      skipErrors: opts.skipErrors,
      out,
      checkpoint: (resumeAfter, acknowledged, damaged) =>
        ctx.state
          .update((s) => {
            s.upload = {
              version,
              source: sourceName,
              resume_after: resumeAfter,
              sessions_acknowledged: base.acknowledged + acknowledged,
              damaged: base.damaged + damaged,
              completed: false,
              updated_at: new Date().toISOString(),
            };
          })
          .then(() => undefined),
      onDamaged: async (d) => {
        failed ??= await JsonArrayFile.create<unknown>(failedPath, { version: 1 }, 'failed');
        await failed.push(damagedJson(d));
      },
    });
    await ctx.state.update((s) => {
      s.upload = {
        version,
        source: sourceName,
        resume_after: s.upload?.resume_after ?? '',
        sessions_acknowledged: base.acknowledged + summary.sent,
        damaged: base.damaged + summary.damaged,
        completed: true,
        updated_at: new Date().toISOString(),
      };
    });
    await failed?.commit({ total_failed: summary.damaged });
    return { ...summary, version, resumed: Boolean(previous), alreadyComplete: false };
  } catch (e) {
    await failed?.abort();
    throw e;
  }
}
