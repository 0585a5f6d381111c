/**
 * migration-state.json: what a rerun needs to continue rather than start over. Written atomically
 * after every acknowledged upload request. It holds no secret: the backup version, our public key,
 * the position to resume after, and counts.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { MIGRATION_FILES } from '../config.js';
import { ToolError } from '../errors.js';
import { writeFileAtomic } from './atomic-file.js';

export interface MigrationState {
  schema: 1;
  backup?: { version: string; public_key: string; created_at: string };
  upload?: {
    version: string;
    /** `store`, or the key file given to `upload --from`: the position below belongs to it. */
    source?: string;
    /** Every entry up to and including this one is acknowledged: a hex Sled key, or a file's element index. */
    resume_after: string;
    sessions_acknowledged: number;
    damaged: number;
    completed: boolean;
    updated_at: string;
  };
  verify?: { version: string; status: 'COMPLETE' | 'INCOMPLETE'; keys_in_backup: number; keys_in_store: number; at: string };
}

export class StateFile {
  constructor(readonly migrationDir: string) {}

  get path(): string {
    return path.join(this.migrationDir, MIGRATION_FILES.state);
  }

  async read(): Promise<MigrationState> {
    let text: string;
    try {
      text = await fs.readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { schema: 1 };
      throw e;
    }
    try {
      const state = JSON.parse(text) as MigrationState;
      if (state?.schema !== 1) throw new Error('unknown schema');
      return state;
    } catch (e) {
      throw new ToolError(
        'STATE_CORRUPT',
        `${this.path} is damaged (${(e as Error).message})`,
        'move it aside (e.g. to migration-state.json.bad) and rerun: the upload restarts from the beginning, which duplicates nothing (uploads are idempotent)',
      );
    }
  }

  async write(state: MigrationState): Promise<void> {
    await writeFileAtomic(this.path, JSON.stringify(state, null, 2) + '\n');
  }

  async update(fn: (s: MigrationState) => void): Promise<MigrationState> {
    const state = await this.read();
    fn(state);
    await this.write(state);
    return state;
  }
}
