/**
 * `--ca-file FILE` (`CA_FILE`): trust a private CA for the homeserver. Node takes extra CA
 * certificates only at startup (NODE_EXTRA_CA_CERTS) and its fetch takes none per request, so the
 * CLI starts itself once more with that variable set: same arguments, same terminal, signals
 * passed on, its exit code returned. Nothing secret is added to the child's command line.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fromEnvironment } from './environment.js';
import { ToolError } from './errors.js';

export function caFileFrom(argv: string[], env: NodeJS.ProcessEnv): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--ca-file') return argv[i + 1];
    if (a.startsWith('--ca-file=')) return a.slice('--ca-file='.length);
  }
  return fromEnvironment('CA_FILE', env);
}

/** Runs the CLI again trusting `caFile`; undefined when this process already does. */
export async function relaunchTrusting(caFile: string, argv: string[]): Promise<number | undefined> {
  const file = path.resolve(caFile);
  if (process.env.NODE_EXTRA_CA_CERTS === file) return undefined;
  if (!existsSync(file)) throw new ToolError('USAGE', `the CA file ${file} does not exist`, 'give --ca-file (CA_FILE) the PEM certificate of the CA that signed the homeserver\'s certificate');
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...argv], { stdio: 'inherit', env: { ...process.env, NODE_EXTRA_CA_CERTS: file } });
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code ?? (signal === 'SIGINT' ? 130 : 143));
    }),
  );
}
