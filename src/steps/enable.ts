/**
 * enable: a backup version on the server that uses our key. Reuses what a previous run set up when
 * it is still current, so a rerun of `all` continues instead of starting over.
 */
import { ToolError } from '../errors.js';
import { createBackup, currentBackup, type BackupVersion } from '../matrix/key-backup.js';
import { whoami } from '../matrix/account.js';
import { keyPaths, readKeyFiles, writeKeyFiles } from '../migration/key-files.js';
import { call, native } from '../store/native.js';
import { askYesNo, revealOnTerminal } from '../terminal.js';
import type { StepContext } from './context.js';

export interface EnableOptions {
  forceNewBackup: boolean;
}

export interface EnableResult {
  version: string;
  publicKey: string;
  created: boolean;
  keyGenerated: boolean;
}

export async function enableBackup(ctx: StepContext, opts: EnableOptions): Promise<EnableResult> {
  const { client, out } = ctx;
  const me = await whoami(client);
  let key = await readKeyFiles(ctx.migrationDir);
  const current = await currentBackup(client);
  const state = await ctx.state.read();

  if (key && current && current.auth_data.public_key === key.publicKey) {
    if (state.backup?.version !== current.version) {
      await ctx.state.update((s) => {
        s.backup = { version: current.version, public_key: key!.publicKey, created_at: new Date().toISOString() };
      });
    }
    out.info(`backup version ${current.version} is current and uses our key (${current.count} keys on the server): reusing it`);
    return { version: current.version, publicKey: key.publicKey, created: false, keyGenerated: false };
  }

  if (current) await refuseOrConfirmReplace(current, ctx, opts);

  let keyGenerated = false;
  if (!key) {
    key = await call(() => native().generateBackupKey());
    await writeKeyFiles(ctx.migrationDir, key, { userId: me.user_id });
    keyGenerated = true;
  }
  const version = await createBackup(client, key.publicKey);
  await ctx.state.update((s) => {
    s.backup = { version, public_key: key!.publicKey, created_at: new Date().toISOString() };
    delete s.upload;
    delete s.verify;
  });
  out.info(`created backup version ${version} for ${me.user_id}`);
  const paths = keyPaths(ctx.migrationDir);
  if (keyGenerated) revealOnTerminal(out)?.(key);
  out.info(`the recovery key is saved in ${paths.recoveryKey} (mode 0600): store it safely, the bot needs it to restore its keys`);
  return { version, publicKey: key.publicKey, created: true, keyGenerated };
}

async function refuseOrConfirmReplace(current: BackupVersion, ctx: StepContext, opts: EnableOptions): Promise<void> {
  const what = `the account already has backup version ${current.version} (${current.count} keys) with another key`;
  if (opts.forceNewBackup) {
    ctx.out.warn(`${what}; FORCE_NEW_BACKUP is set: creating a new version, which becomes the current one`);
    return;
  }
  const confirm = askYesNo();
  if (confirm && (await confirm(`${what}. Create a new backup version and make it current? [y/N] `))) return;
  throw new ToolError(
    'BACKUP_EXISTS',
    what,
    'if you hold its recovery key, put it in MIGRATION_DIR/recovery-key.txt and rerun; to replace it, rerun with FORCE_NEW_BACKUP=1 (--force-new-backup)',
  );
}
