/** Runs the built CLI as an operator would: a separate process, environment variables, exit code. */
import { spawn } from 'node:child_process';
import { CLI } from './paths.js';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: Record<string, string | undefined>, opts: { killAfterMs?: number; killWhen?: (stderr: string) => boolean; killWhenSeen?: () => boolean } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, CI: 'true', ...env })) if (v !== undefined) clean[k] = v;
    const child = spawn(process.execPath, [CLI, ...args], { env: clean, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (opts.killWhen?.(stderr)) child.kill('SIGKILL');
    });
    const timer = opts.killAfterMs ? setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs) : undefined;
    // A condition on the files the run writes, looked at every 2 ms.
    const watcher = opts.killWhenSeen
      ? setInterval(() => {
          if (opts.killWhenSeen!()) child.kill('SIGKILL');
        }, 2)
      : undefined;
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (watcher) clearInterval(watcher);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
