/** The passphrase of an Element key export: from a file, EXPORT_PASSPHRASE, or a hidden prompt. */
import { promises as fs } from 'node:fs';
import { Option } from 'clipanion';
import { fromEnvironment } from '../environment.js';
import { ToolError } from '../errors.js';
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
