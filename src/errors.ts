/**
 * One error type for the whole tool, and the one table that maps its codes to exit codes.
 * docs/exit-codes.md documents this table; test/exit-codes.test.ts checks that the two agree.
 */

import { diagnostics } from './environment.js';

export const EXIT_CODES = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  STORE_NOT_FOUND: 3,
  NOT_A_SLED_STORE: 3,
  NOT_A_CRYPTO_STORE: 3,
  LEGACY_STORE: 3,
  INVALID_BOT_SDK_JSON: 3,
  KEY_FILE: 3,
  STORE_LOCKED: 4,
  WRONG_PASSPHRASE: 5,
  DAMAGED_ENTRIES: 6,
  STORE_CORRUPT: 6,
  MIGRATION_DIR: 7,
  IO_ERROR: 7,
  HOMESERVER_UNREACHABLE: 8,
  NOT_A_HOMESERVER: 8,
  TLS: 8,
  AUTH: 9,
  BACKUP_EXISTS: 10,
  BACKUP_KEY_MISMATCH: 10,
  WRONG_BACKUP_VERSION: 10,
  NO_BACKUP: 10,
  VERIFY_INCOMPLETE: 11,
  STATE_CORRUPT: 12,
  DEVICE: 13,
  BACKUP_INVALID: 14,
  SQLITE_STORE_EXISTS: 15,
  NO_ACCOUNT: 16,
  CONVERT_CHECK_FAILED: 17,
  WRONG_DEVICE: 18,
  RUN_LOCKED: 19,
  SQLITE_STORE_MISSING: 20,
  SQLITE_STORE_UNUSABLE: 21,
  SQLITE_IN_USE: 22,
  MERGE_CHECK_FAILED: 23,
  INTERRUPTED: 130,
} as const;

export type ErrorCode = Exclude<keyof typeof EXIT_CODES, 'OK'>;

/** One line per exit code, for `--json` results; the full table with fixes is docs/exit-codes.md. */
const EXIT_MEANINGS: Record<number, string> = {
  0: 'done',
  1: 'an unexpected failure (a bug)',
  2: 'a missing or malformed option or variable',
  3: 'the store or an input file is missing or not what it should be',
  4: 'the bot is running: it holds the store',
  5: 'a passphrase does not open the store or the export',
  6: 'damaged entries (strict mode) or a store that cannot be opened',
  7: 'MIGRATION_DIR or a file could not be read or written',
  8: 'the homeserver could not be reached or did not answer as Matrix',
  9: 'the access token was rejected',
  10: 'the server-side backup is not the one this migration uses',
  11: 'verify found keys missing from the backup or different from the store',
  12: 'migration-state.json cannot be read',
  13: 'the device operation was refused',
  14: 'the store backup is incomplete or does not match its checksums',
  15: 'a SQLite crypto store already exists',
  16: 'the Sled store holds no Olm account',
  17: 'the written SQLite store does not hold what was written',
  18: 'the bot would start as another device than the store\'s (bot-sdk.json or the access token)',
  19: 'another run is using the same folder',
  20: 'there is no SQLite crypto store to merge into',
  21: 'the SQLite crypto store cannot be merged into as it is',
  22: 'the SQLite crypto store is in use',
  23: 'the merged SQLite store does not hold what was merged',
  130: 'interrupted',
};

export function exitMeaning(code: number): string {
  const names = Object.entries(EXIT_CODES)
    .filter(([, c]) => c === code)
    .map(([n]) => n);
  const meaning = EXIT_MEANINGS[code] ?? 'see docs/exit-codes.md';
  return names.length ? `${names.join(', ')}: ${meaning}` : meaning;
}

export class ToolError extends Error {
  override readonly name = 'ToolError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** What the operator should do, in one sentence. */
    readonly hint?: string,
  ) {
    super(message);
  }

  get exitCode(): number {
    return EXIT_CODES[this.code];
  }

  /** The one line an operator sees: cause, then fix. */
  toLine(): string {
    return this.hint ? `error: ${this.message}. Fix: ${this.hint}.` : `error: ${this.message}.`;
  }
}

export function isToolError(e: unknown): e is ToolError {
  return e instanceof ToolError;
}

/** Prints the one line for an error and returns its exit code. */
export function reportError(e: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  if (isToolError(e)) {
    stderr.write(e.toLine() + '\n');
    return e.exitCode;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  stderr.write(`error: unexpected failure: ${err.message}. Fix: rerun with DEBUG=1 for details and report it; progress so far is kept.\n`);
  if (diagnostics.debug()) stderr.write(`${err.stack}\n`);
  return EXIT_CODES.INTERNAL;
}
