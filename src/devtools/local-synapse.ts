/**
 * A real, throwaway Synapse for tests, the demo and the benchmarks: installed from PyPI into a
 * cached virtualenv by scripts/install-synapse.sh, started on a free loopback port with a fresh
 * SQLite database in a temporary folder, and removed when stopped.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalPostgres } from './local-postgres.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface RegisteredUser {
  userId: string;
  password: string;
  accessToken: string;
  deviceId: string;
}

export interface SynapseOptions {
  /** Synapse's own request body limit (`max_upload_size` does not cover client API bodies). */
  extraConfig?: string;
  log?: (line: string) => void;
  /** The server name, `localhost` by default: `example.org` serves the users of the committed fixtures. */
  serverName?: string;
  /** `postgres`: a throwaway PostgreSQL cluster (src/devtools/local-postgres.ts), as production homeservers run; default SQLite. */
  database?: 'sqlite' | 'postgres';
}

export class LocalSynapse {
  private constructor(
    readonly baseUrl: string,
    readonly serverName: string,
    private readonly dir: string,
    private readonly child: ChildProcess,
    private readonly sharedSecret: string,
    /** The PostgreSQL cluster under this Synapse, when it runs on one. */
    readonly postgres?: LocalPostgres,
  ) {}

  /** Synapse's process ID (its CPU time, for benchmarks). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  static venvPython(): string {
    return path.join(process.env.SYNAPSE_VENV ?? path.join(ROOT, '.cache', 'synapse-venv'), 'bin', 'python');
  }

  static install(): void {
    const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'install-synapse.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error(`installing Synapse failed (exit ${r.status})`);
  }

  static async start(opts: SynapseOptions = {}): Promise<LocalSynapse> {
    LocalSynapse.install();
    const postgres = opts.database === 'postgres' ? LocalPostgres.start() : undefined;
    try {
      return await LocalSynapse.startOn(opts, postgres);
    } catch (e) {
      postgres?.stop();
      throw e;
    }
  }

  private static async startOn(opts: SynapseOptions, postgres: LocalPostgres | undefined): Promise<LocalSynapse> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'synapse-'));
    const port = await freePort();
    const serverName = opts.serverName ?? 'localhost';
    const sharedSecret = randomBytes(24).toString('hex');
    const databaseSection = postgres
      ? `database:\n  name: psycopg2\n  args:\n    user: ${postgres.database.user}\n    database: ${postgres.database.database}\n    host: "${postgres.database.host}"\n    cp_min: 1\n    cp_max: 10`
      : `database:\n  name: sqlite3\n  args:\n    database: "${dir}/homeserver.db"`;
    const config = `
server_name: "${serverName}"
pid_file: "${dir}/homeserver.pid"
report_stats: false
listeners:
  - port: ${port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
${databaseSection}
media_store_path: "${dir}/media"
signing_key_path: "${dir}/signing.key"
log_config: "${dir}/log.yaml"
registration_shared_secret: "${sharedSecret}"
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
rc_message: { per_second: 10000, burst_count: 10000 }
rc_login:
  address: { per_second: 1000, burst_count: 1000 }
  account: { per_second: 1000, burst_count: 1000 }
  failed_attempts: { per_second: 1000, burst_count: 1000 }
rc_registration: { per_second: 1000, burst_count: 1000 }
rc_delayed_event_mgmt: { per_second: 1000, burst_count: 1000 }
${opts.extraConfig ?? ''}
`;
    await fs.writeFile(path.join(dir, 'homeserver.yaml'), config);
    await fs.writeFile(
      path.join(dir, 'log.yaml'),
      `version: 1\nformatters:\n  f: {format: '%(asctime)s %(levelname)s %(name)s %(message)s'}\nhandlers:\n  file: {class: logging.FileHandler, filename: "${dir}/homeserver.log", formatter: f}\nroot: {level: WARNING, handlers: [file]}\ndisable_existing_loggers: false\n`,
    );
    const python = LocalSynapse.venvPython();
    const keys = spawnSync(python, ['-m', 'synapse.app.homeserver', '-c', path.join(dir, 'homeserver.yaml'), '--generate-keys'], { encoding: 'utf8' });
    if (keys.status !== 0) throw new Error(`synapse --generate-keys failed: ${keys.stderr}`);
    const child = spawn(python, ['-m', 'synapse.app.homeserver', '-c', path.join(dir, 'homeserver.yaml')], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.length > 20000) stderr = stderr.slice(-20000);
    });
    const baseUrl = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`Synapse exited (${child.exitCode}): ${stderr.slice(-2000)}`);
      try {
        const r = await fetch(`${baseUrl}/_matrix/client/versions`);
        if (r.ok) break;
      } catch {
        /* not up yet */
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`Synapse did not come up in 90 s: ${stderr.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    opts.log?.(`Synapse up at ${baseUrl} (data in ${dir})`);
    return new LocalSynapse(baseUrl, serverName, dir, child, sharedSecret, postgres);
  }

  /** Shared-secret registration (Synapse admin API). */
  async registerUser(localpart: string, password = randomBytes(12).toString('hex'), admin = false): Promise<RegisteredUser> {
    const url = `${this.baseUrl}/_synapse/admin/v1/register`;
    const { nonce } = (await (await fetch(url)).json()) as { nonce: string };
    const mac = createHmac('sha1', this.sharedSecret)
      .update(`${nonce}\0${localpart}\0${password}\0${admin ? 'admin' : 'notadmin'}`)
      .digest('hex');
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nonce, username: localpart, password, admin, mac }),
    });
    if (!r.ok) throw new Error(`register ${localpart}: ${r.status} ${await r.text()}`);
    const body = (await r.json()) as { user_id: string; access_token: string; device_id: string };
    return { userId: body.user_id, password, accessToken: body.access_token, deviceId: body.device_id };
  }

  /** A password login: a new device and access token for an existing user. */
  async login(user: Pick<RegisteredUser, 'userId' | 'password'>, deviceId?: string): Promise<RegisteredUser> {
    const r = await fetch(`${this.baseUrl}/_matrix/client/v3/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: user.userId }, password: user.password, device_id: deviceId }),
    });
    if (!r.ok) throw new Error(`login ${user.userId}: ${r.status} ${await r.text()}`);
    const body = (await r.json()) as { user_id: string; access_token: string; device_id: string };
    return { userId: body.user_id, password: user.password, accessToken: body.access_token, deviceId: body.device_id };
  }

  /** Deletes a key backup version, as a client would (Synapse deletes its keys with it). */
  async deleteBackup(accessToken: string, version: string): Promise<void> {
    const r = await fetch(`${this.baseUrl}/_matrix/client/v3/room_keys/version/${encodeURIComponent(version)}`, { method: 'DELETE', headers: { authorization: `Bearer ${accessToken}` } });
    if (!r.ok) throw new Error(`deleting backup version ${version} failed: ${r.status} ${await r.text()}`);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    this.postgres?.stop();
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
