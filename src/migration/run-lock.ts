/**
 * One run per folder. Two runs on one MIGRATION_DIR race on recovery-key.txt and the state file
 * (one `all --force-new-backup` replaced the backup the other was uploading into); two `convert`s
 * on one crypto folder write one SQLite store twice. So every command that writes holds a lock on
 * the folders it writes, for as long as it runs, and a second run is refused at once naming the
 * first.
 *
 * The lock is the kernel's (flock, crates/run-lock): it ends with its process however that ends,
 * so a killed run's lock is simply taken over (said on stderr) and a live run's never is, even
 * where pids repeat (in a restarted pod the dead run and the new one are both pid 1). The lock
 * file names its holder (pid, host, command, start) for the refusal; a clean run removes it.
 *
 * In the crypto folder the file sits beside `matrix-sdk-crypto/`, never inside it: the Sled store
 * is not written, and the reader's own shared flock on `matrix-sdk-crypto/db` already keeps the
 * bot out (and lets our read-only commands share the store).
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ToolError } from '../errors.js';
import type { Output } from '../log.js';
import { call, native, type Binding } from '../store/native.js';
import { ensurePrivateDir } from './atomic-file.js';

export const LOCK_FILE = '.sled-migration-tool.lock';

/** The folders a command can lock: see `BaseCommand.locks`. */
export type LockedFolder = 'migration-dir' | 'crypto-store';

/** What a holder writes into the lock file; no secret, only what tells an operator which run it is. */
interface Holder {
  pid: number;
  host: string;
  command: string;
  since: string;
}

/** Locks held by this process, released on any exit (a signal's `process.exit` included). */
const held = new Set<Binding.FolderLock>();
process.on('exit', () => {
  for (const lock of held) lock.release();
});

export interface RunLocks {
  release(): void;
}

/**
 * Locks each folder, in the order given (every command locks MIGRATION_DIR first, so two commands
 * never wait on each other crosswise; and nobody waits: a held lock refuses at once). MIGRATION_DIR
 * is created (0700) if need be; a crypto folder that does not exist is not locked (the command
 * then reports the missing store itself).
 */
export async function lockFolders(folders: { what: LockedFolder; dir: string }[], command: string, out: Output): Promise<RunLocks> {
  const taken: Binding.FolderLock[] = [];
  const release = () => {
    for (const lock of taken.splice(0).reverse()) {
      lock.release();
      held.delete(lock);
    }
  };
  const seen = new Set<string>();
  try {
    for (const { what, dir } of folders) {
      if (what === 'migration-dir') await ensurePrivateDir(dir);
      else if (!existsSync(dir)) continue;
      const file = path.join(dir, LOCK_FILE);
      if (seen.has(file)) continue; // MIGRATION_DIR may be the crypto folder itself
      seen.add(file);
      const holder: Holder = { pid: process.pid, host: os.hostname(), command, since: new Date().toISOString() };
      const lock = await call(() => native().FolderLock.tryAcquire(file, JSON.stringify(holder)));
      if (!lock.acquired) {
        throw new ToolError(
          'RUN_LOCKED',
          `another run is using ${dir}: ${describeHolder(lock.other)}`,
          `wait for it to finish (or stop it), then rerun; if no such process runs, check that nothing else shares this folder (another pod on the same volume)`,
        );
      }
      taken.push(lock);
      held.add(lock);
      if (lock.other) out.warn(`took over the lock on ${dir} left by ${describeHolder(lock.other)}, which is no longer running`);
    }
  } catch (e) {
    release();
    throw e;
  }
  return { release };
}

function describeHolder(text: string | null): string {
  if (!text) return 'a process that has not said which it is yet';
  try {
    const h = JSON.parse(text) as Partial<Holder>;
    return `\`${h.command ?? '?'}\` (pid ${h.pid ?? '?'} on ${h.host ?? '?'}, since ${h.since ?? '?'})`;
  } catch {
    return `a process that wrote "${text.slice(0, 80)}" into the lock file`;
  }
}
