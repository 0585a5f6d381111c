/**
 * Every file that matters is written here: to a temporary file beside the target, fsynced, then
 * renamed into place and the folder fsynced. A crash leaves either the old file or the new one,
 * never half of one; an aborted write leaves nothing.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import path from 'node:path';
import { ToolError } from '../errors.js';

/** Secrets and run state: owner only. */
export const PRIVATE_FILE = 0o600;
export const PRIVATE_DIR = 0o700;

export class AtomicFile {
  private closed = false;

  private constructor(
    readonly target: string,
    readonly temp: string,
    private readonly handle: fs.FileHandle,
  ) {}

  static async create(target: string, mode = PRIVATE_FILE): Promise<AtomicFile> {
    const dir = path.dirname(target);
    const temp = path.join(dir, `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    await removeAbandonedTemps(dir, path.basename(target));
    try {
      const handle = await fs.open(temp, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, mode);
      await handle.chmod(mode); // the umask may have narrowed or the mode been ignored
      return new AtomicFile(target, temp, handle);
    } catch (e) {
      throw fileError(e, dir);
    }
  }

  async write(data: string | Uint8Array): Promise<void> {
    try {
      if (typeof data === 'string') await this.handle.write(data);
      else await this.handle.write(data);
    } catch (e) {
      await this.abort();
      throw fileError(e, path.dirname(this.target));
    }
  }

  /** Makes the file durable and visible under its name. */
  async commit(): Promise<void> {
    try {
      await this.handle.sync();
      await this.handle.close();
      this.closed = true;
      await fs.rename(this.temp, this.target);
      await fsyncDir(path.dirname(this.target));
    } catch (e) {
      await this.abort();
      throw fileError(e, path.dirname(this.target));
    }
  }

  /** Removes the temporary file; the target is untouched. */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.handle.close().catch(() => undefined);
    }
    await fs.rm(this.temp, { force: true });
  }
}

/** Targets swept in this process: the state file is rewritten after every upload request. */
const swept = new Set<string>();

/**
 * A run killed mid-write leaves its temporary file (for extracted-keys.json: plaintext keys) behind;
 * the first write of the same file in the next run removes those whose process is gone.
 */
async function removeAbandonedTemps(dir: string, base: string): Promise<void> {
  const key = path.join(dir, base);
  if (swept.has(key)) return;
  swept.add(key);
  const prefix = `.${base}.tmp-`;
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue;
    await fs.rm(path.join(dir, name), { force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function writeFileAtomic(target: string, data: string | Uint8Array, mode = PRIVATE_FILE): Promise<void> {
  const file = await AtomicFile.create(target, mode);
  await file.write(data);
  await file.commit();
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Creates a folder for secrets (0700), or checks and tightens an existing one. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true, mode: PRIVATE_DIR });
    await fs.access(dir, fsConstants.W_OK);
  } catch (e) {
    throw fileError(e, dir);
  }
}

function fileError(e: unknown, dir: string): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new ToolError('MIGRATION_DIR', `${dir} is full (${code})`, 'free space there or set MIGRATION_DIR to a folder with room; nothing was half-written');
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new ToolError('MIGRATION_DIR', `${dir} is not writable (${code})`, 'set MIGRATION_DIR to a folder this user can write');
  }
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new ToolError('MIGRATION_DIR', `${dir} does not exist or is not a folder`, 'create it or set MIGRATION_DIR to an existing folder');
  }
  return e;
}
