/**
 * The bot's matrix-sdk-crypto 0.9 OlmMachine over its SQLite store, opened as matrix-bot-sdk 0.8
 * opens it (crates/sqlite-convert/examples/bot_machine.rs), driven over JSON lines; this side does
 * the HTTP against the homeserver with the bot's access token, as the bot would.
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT } from './paths.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let built: string | undefined;
function example(): string {
  if (built) return built;
  const r = spawnSync('cargo', ['build', '--release', '--quiet', '--manifest-path', path.join(ROOT, 'Cargo.toml'), '-p', 'sqlite-convert', '--example', 'bot_machine'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`building bot_machine failed (${r.status})`);
  built = path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'release', 'examples', 'bot_machine');
  return built;
}

export interface BotMachine {
  call(command: Json): Promise<Json>;
  /** Sends the machine's key uploads and queries; returns the HTTP status of each upload. */
  publish(): Promise<number[]>;
  /** One /sync: hands the to-device events to the machine; returns the session IDs of the room keys they carried. */
  sync(): Promise<string[]>;
  close(): Promise<void>;
}

export async function botMachine(baseUrl: string, token: string, cryptoStoreDir: string, user: string): Promise<BotMachine> {
  const child = spawn(example(), [cryptoStoreDir, user], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Json> => {
    const line = await lines.next();
    if (line.done) throw new Error('bot_machine ended');
    const answer = JSON.parse(line.value) as Json;
    if (answer && !Array.isArray(answer) && 'error' in answer) throw new Error(`bot_machine: ${answer.error}`);
    return answer;
  };
  await next();
  const call = (command: Json) => {
    child.stdin.write(`${JSON.stringify(command)}\n`);
    return next();
  };
  const http = async (method: string, p: string, body?: unknown) => {
    const r = await fetch(`${baseUrl}/_matrix/client/v3${p}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: r.status, json: (await r.json()) as Json };
  };
  return {
    call,
    async publish() {
      const statuses: number[] = [];
      for (let round = 0; round < 5; round++) {
        const requests = (await call({ op: 'requests' })) as unknown as { id: string; kind: string; body: Json }[];
        if (requests.length === 0) break;
        for (const r of requests) {
          const answer = await http('POST', r.kind === 'keys_upload' ? '/keys/upload' : '/keys/query', r.body);
          if (r.kind === 'keys_upload') statuses.push(answer.status);
          if (answer.status === 200) await call({ op: 'sent', id: r.id, kind: r.kind, response: answer.json });
        }
        if (statuses.some((s) => s !== 200)) break;
      }
      return statuses;
    },
    async sync() {
      const r = await http('GET', '/sync?timeout=0');
      const answer = await call({ op: "sync", to_device: r.json.to_device?.events ?? [] });
      return answer.room_keys as string[];
    },
    close: () =>
      new Promise<void>((resolve) => {
        child.on('exit', () => resolve());
        child.stdin.end();
      }),
  };
}
