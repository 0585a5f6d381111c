/** Starts test/faults/fault-proxy.mjs as its own process in front of a homeserver. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './paths.js';

export interface FaultProxy {
  url: string;
  stats(): Record<string, number>;
  stop(): void;
}

export interface FaultOptions {
  rate?: number;
  faults?: string[];
  seed?: number;
  path?: string;
  maxBody?: number;
  html?: boolean;
  /** Answer uploads into a missing backup version as Dendrite does (500, no errcode). */
  dendrite?: boolean;
  /** Hold each request on `path` this long, one at a time (a per-request cost under the user's lock). */
  perRequestMs?: number;
}

export async function startFaultProxy(target: string, opts: FaultOptions = {}): Promise<FaultProxy> {
  const statsFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'fault-proxy-')), 'stats.json');
  const argv = [path.join(ROOT, 'test', 'faults', 'fault-proxy.mjs'), '--target', target, '--stats', statsFile];
  if (opts.rate !== undefined) argv.push('--rate', String(opts.rate));
  if (opts.faults) argv.push('--faults', opts.faults.join(','));
  if (opts.seed !== undefined) argv.push('--seed', String(opts.seed));
  if (opts.path) argv.push('--path', opts.path);
  if (opts.maxBody) argv.push('--max-body', String(opts.maxBody));
  if (opts.html) argv.push('--html');
  if (opts.dendrite) argv.push('--dendrite');
  if (opts.perRequestMs) argv.push('--per-request-ms', String(opts.perRequestMs));
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`fault proxy exited (${code})`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => {
      try {
        return JSON.parse(readFileSync(statsFile, 'utf8')) as Record<string, number>;
      } catch {
        return {};
      }
    },
    stop: () => void child.kill('SIGTERM'),
  };
}
