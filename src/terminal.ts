/**
 * The only places the tool talks to a person: questions and the one-time display of the recovery
 * key. Both exist only when stdin and stdout are terminals (never in a Kubernetes Job's log).
 */
import readline from 'node:readline/promises';
import type { Output } from './log.js';
import type { BackupKey } from './migration/key-files.js';

export function isInteractive(): boolean {
  return Boolean(process.stdin.isTTY && process.stdout.isTTY);
}

export function askYesNo(): ((question: string) => Promise<boolean>) | undefined {
  if (!isInteractive()) return undefined;
  return async (question) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
    try {
      return /^y(es)?$/i.test((await rl.question(question)).trim());
    } finally {
      rl.close();
    }
  };
}

export function askLine(question: string): Promise<string> | undefined {
  if (!isInteractive()) return undefined;
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  return rl.question(question).finally(() => rl.close());
}

/** Reads a secret without echoing it. */
export function askHidden(question: string): Promise<string> | undefined {
  if (!isInteractive()) return undefined;
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stdout.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    let value = '';
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') {
          cleanup();
          process.stdout.write('\n');
          resolve(value);
          return;
        }
        if (ch === '\u0003') {
          cleanup();
          reject(new Error('interrupted'));
          return;
        }
        if (ch === '\u007f') value = value.slice(0, -1);
        else value += ch;
      }
    };
    const cleanup = () => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
    };
    stdin.on('data', onData);
  });
}

export function revealOnTerminal(out: Output): ((key: BackupKey) => void) | undefined {
  if (!isInteractive()) return undefined;
  return (key) => {
    out.result('');
    out.result('  Recovery key (shown once; also saved in recovery-key.txt):');
    out.result(`    ${key.recoveryKey}`);
    out.result(`  Base64 form for older bot builds: ${key.privateKeyBase64}`);
    out.result('  Store it in a password manager now. Without it the backup cannot be decrypted.');
    out.result('');
  };
}
