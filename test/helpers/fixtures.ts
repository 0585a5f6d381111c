/**
 * The genuine fixtures: stores written by matrix-sdk-crypto 0.6 / matrix-sdk-sled 0.2 through
 * crates/fixture-writer, with what that code says it wrote (expected.json). Small cases are
 * committed under test/fixtures/; big ones are generated on demand into .cache/fixtures/.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FIXTURES, ROOT } from './paths.js';

export interface ExpectedKey {
  algorithm: string;
  room_id: string;
  sender_key: string;
  session_id: string;
  session_key: string;
  sender_claimed_keys: Record<string, string>;
  forwarding_curve25519_key_chain: string[];
  first_message_index?: number;
  imported?: boolean;
}

export interface RecordedEvent {
  room_id: string;
  session_id: string;
  event: Record<string, unknown>;
  plaintext: Record<string, unknown>;
  event_type?: string;
}

export interface Expected {
  case: string;
  passphrase: string | null;
  store_version: number;
  has_cipher: boolean;
  user_id: string;
  device_id: string;
  keys: ExpectedKey[];
  damaged: { sled_key_hex: string; damage: string; room_id?: string; session_id?: string }[];
  events: RecordedEvent[];
  identity_keys: { curve25519: string; ed25519: string } | null;
  /** An Olm exchange with peer devices (crates/fixture-writer/src/exchange.rs), where the case has one. */
  olm: {
    peer_devices: { user_id: string; device_id: string; curve25519: string; ed25519: string }[];
    olm_sessions: number;
    tracked_users: string[];
    devices: number;
    to_device: { kind: 'existing-session' | 'one-time-key'; event: Record<string, unknown>; room_id: string; session_id: string; events: RecordedEvent[] }[];
  } | null;
}

export interface Fixture {
  name: string;
  dir: string;
  store: string;
  expected: Expected;
}

export function loadFixture(dir: string): Fixture {
  const expected = JSON.parse(readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
  return { name: path.basename(dir), dir, store: path.join(dir, 'store'), expected };
}

export function committedFixture(name: string): Fixture {
  return loadFixture(path.join(FIXTURES, name));
}

export function committedFixtureNames(): string[] {
  return readdirSync(FIXTURES).filter((n) => existsSync(path.join(FIXTURES, n, 'expected.json'))).sort();
}

/** A private copy of a fixture, so a test can lock, damage or watch it without touching others. */
export function copyFixture(f: Fixture): Fixture {
  const dir = mkdtempSync(path.join(os.tmpdir(), `fixture-${f.name}-`));
  cpSync(f.dir, dir, { recursive: true });
  return loadFixture(dir);
}

/** Generates (once, cached) a big genuine store with the fixture writer. */
export function generatedFixture(kase: string, sessions: number, rooms = 5): Fixture {
  const name = `${kase}-${sessions}-${rooms}`;
  const out = path.join(ROOT, '.cache', 'fixtures');
  const dir = path.join(out, name);
  if (!existsSync(path.join(dir, 'expected.json'))) {
    // test files run in parallel processes: each writes its own temporary folder, the first rename wins
    const tmp = path.join(out, `.${name}.tmp-${process.pid}`);
    const r = spawnSync(
      'cargo',
      ['run', '--release', '--quiet', '--manifest-path', path.join(ROOT, 'crates', 'fixture-writer', 'Cargo.toml'), '--', tmp, '--case', kase, '--sessions', String(sessions), '--rooms', String(rooms)],
      { stdio: ['ignore', 'inherit', 'inherit'] },
    );
    if (r.status !== 0) throw new Error(`fixture writer failed (${r.status})`);
    try {
      renameSync(path.join(tmp, kase), dir);
    } catch {
      /* another process got there first */
    }
    rmSync(tmp, { recursive: true, force: true });
  }
  return loadFixture(dir);
}

/** SHA-256 of every file under a folder, by relative path: "unchanged" means byte-identical. */
export function treeHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(dir, rel))) {
      const r = path.join(rel, name);
      const st = statSync(path.join(dir, r));
      if (st.isDirectory()) {
        out[`${r}/`] = 'dir';
        walk(r);
      } else out[r] = createHash('sha256').update(readFileSync(path.join(dir, r))).digest('hex');
    }
  };
  walk('');
  return out;
}

/** The identity of a key for set comparisons: every field a restore depends on. */
export function keyIdentity(k: Pick<ExpectedKey, 'room_id' | 'session_id' | 'session_key' | 'sender_key' | 'sender_claimed_keys'>): string {
  const claimed = Object.entries(k.sender_claimed_keys).sort().map(([a, b]) => `${a}=${b}`).join(',');
  return [k.room_id, k.session_id, k.session_key.replace(/=+$/, ''), k.sender_key.replace(/=+$/, ''), claimed].join('|');
}

/** Plays the running bot: an exclusive flock on matrix-sdk-crypto/db, as Sled takes in `open`. */
export async function holdStoreLock(store: string): Promise<{ release(): void }> {
  const { spawn } = await import('node:child_process');
  const holder = spawn('python3', ['-c', 'import fcntl,sys,time; f=open(sys.argv[1],"r+b"); fcntl.flock(f, fcntl.LOCK_EX); print("locked", flush=True); time.sleep(300)', path.join(store, 'matrix-sdk-crypto', 'db')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    holder.stdout.once('data', () => resolve());
    holder.once('exit', (code) => reject(new Error(`lock holder exited (${code})`)));
  });
  return { release: () => void holder.kill('SIGKILL') };
}
