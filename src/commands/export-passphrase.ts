/** The passphrase of an Element key export: from a file, EXPORT_PASSPHRASE, or a hidden prompt. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Option } from 'clipanion';
import { fromEnvironment } from '../environment.js';
import { ToolError } from '../errors.js';
import type { KeyFileSource } from '../store/sessions.js';
import { askHidden } from '../terminal.js';

export const exportPassphraseFileOption = () =>
  Option.String('--export-passphrase-file', { description: 'File holding the key export passphrase (else EXPORT_PASSPHRASE, else a prompt)' });

/** `creating`: asked twice and never empty; reading an existing export: asked once. */
export async function exportPassphrase(file: string | undefined, creating: boolean): Promise<string> {
  if (file) return (await fs.readFile(file, 'utf8')).replace(/\r?\n$/, '');
  const fromEnv = fromEnvironment('EXPORT_PASSPHRASE');
  if (fromEnv === '' && creating) {
    throw new ToolError('USAGE', 'EXPORT_PASSPHRASE is set to the empty string, which would leave the export unprotected', 'set EXPORT_PASSPHRASE to a passphrase, or unset it to be asked on a terminal');
  }
  if (fromEnv !== undefined) return fromEnv;
  const first = await askHidden('Passphrase for the key export: ');
  if (first === undefined) {
    throw new ToolError('USAGE', 'a key export needs its passphrase', 'pass --export-passphrase-file FILE or set EXPORT_PASSPHRASE, or run on a terminal to be asked');
  }
  if (!creating) return first;
  if ((await askHidden('Repeat it: ')) !== first) throw new ToolError('USAGE', 'the two passphrases differ', 'run the command again');
  if (!first) throw new ToolError('USAGE', 'an empty passphrase would leave the export unprotected', 'choose a passphrase');
  return first;
}

/**
 * A key file given to `--from` (`upload`, `merge`): an Element export is recognised by its header
 * and needs its passphrase; extracted-keys.json and JSON arrays do not.
 */
export async function keyFileSource(file: string, passphraseFile: string | undefined): Promise<KeyFileSource> {
  const keyFile = path.resolve(file);
  let head = '';
  try {
    const handle = await fs.open(keyFile, 'r');
    try {
      const { bytesRead, buffer } = await handle.read(Buffer.alloc(64), 0, 64, 0);
      head = buffer.subarray(0, bytesRead).toString('latin1');
    } finally {
      await handle.close();
    }
  } catch (e) {
    throw new ToolError('KEY_FILE', `cannot read ${keyFile} (${(e as NodeJS.ErrnoException).code ?? e})`, 'check the path given to --from');
  }
  const isExport = head.startsWith('-----BEGIN MEGOLM SESSION DATA-----');
  return { keyFile, exportPassphrase: isExport ? await exportPassphrase(passphraseFile, false) : undefined };
}
