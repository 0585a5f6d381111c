/**
 * A throwaway PostgreSQL cluster for a local Synapse (`npm run bench -- --postgres`, and tests that
 * want the database real homeservers run on): Debian's server binaries, `initdb` into
 * `.cache/postgres/`, listening on a Unix socket only (no TCP port), removed when stopped.
 * Installed by scripts/install-postgres.sh.
 *
 * PostgreSQL refuses to run as root: under root (CI, a container) the cluster belongs to Debian's
 * `postgres` user and its commands run through `runuser`.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** What Synapse's `database:` section needs: a role, a database and the socket's folder. */
export interface PostgresDatabase {
  host: string;
  user: string;
  database: string;
}

export class LocalPostgres {
  private constructor(
    private readonly dataDir: string,
    readonly socketDir: string,
    private readonly asUser: string | undefined,
  ) {}

  static install(): void {
    const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'install-postgres.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error(`installing PostgreSQL failed (exit ${r.status})`);
  }

  static start(): LocalPostgres {
    LocalPostgres.install();
    const asUser = process.getuid?.() === 0 ? 'postgres' : undefined;
    const base = path.join(ROOT, '.cache', 'postgres');
    mkdirSync(base, { recursive: true });
    const root = mkdtempSync(path.join(base, 'cluster-'));
    const dataDir = path.join(root, 'data');
    const socketDir = path.join(root, 'socket');
    mkdirSync(socketDir);
    if (asUser) {
      const { uid, gid } = userIds(asUser);
      chownSync(root, uid, gid);
      chownSync(socketDir, uid, gid);
    }
    const pg = new LocalPostgres(dataDir, socketDir, asUser);
    // Synapse refuses a database whose collation is not C.
    pg.run('initdb', ['-D', dataDir, '-U', 'synapse', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
    // shared_buffers as a homeserver's database is given some memory (PostgreSQL's default, 128 MB,
    // is for a laptop); pg_stat_statements so a benchmark can tell the server's time per query.
    const settings = `-k ${socketDir} -c listen_addresses='' -c fsync=off -c max_connections=50 -c shared_buffers=1GB -c shared_preload_libraries=pg_stat_statements`;
    pg.run('pg_ctl', ['-D', dataDir, '-w', '-l', path.join(root, 'server.log'), '-o', settings, 'start']);
    pg.run('createdb', ['-h', socketDir, '-U', 'synapse', '-E', 'UTF8', '--lc-collate=C', '--lc-ctype=C', '-T', 'template0', 'synapse']);
    pg.query('CREATE EXTENSION pg_stat_statements');
    return pg;
  }

  /** The server's process ID (its backends are its children). */
  get pid(): number {
    return Number(readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  }

  get database(): PostgresDatabase {
    return { host: this.socketDir, user: 'synapse', database: 'synapse' };
  }

  /** Runs SQL as the superuser (query timings, counts); returns psql's unaligned output. */
  query(sql: string): string {
    return this.run('psql', ['-h', this.socketDir, '-U', 'synapse', '-d', 'synapse', '-At', '-c', sql]);
  }

  stop(): void {
    if (existsSync(path.join(this.dataDir, 'postmaster.pid'))) this.run('pg_ctl', ['-D', this.dataDir, '-w', '-m', 'fast', 'stop']);
    rmSync(path.dirname(this.dataDir), { recursive: true, force: true });
  }

  private run(tool: string, args: string[]): string {
    const bin = path.join(serverBinaries(), tool);
    const [cmd, argv] = this.asUser ? ['runuser', ['-u', this.asUser, '--', bin, ...args]] : [bin, args];
    const r = spawnSync(cmd, argv, { encoding: 'utf8', cwd: '/' });
    if (r.status !== 0) throw new Error(`${tool} failed (exit ${r.status}): ${r.stderr || r.stdout}`);
    return r.stdout;
  }
}

/** Debian keeps the server's tools in /usr/lib/postgresql/<major>/bin: the newest there. */
function serverBinaries(): string {
  const majors = readdirSync('/usr/lib/postgresql').filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(b) - Number(a));
  if (!majors.length) throw new Error('no PostgreSQL server in /usr/lib/postgresql: run scripts/install-postgres.sh');
  return path.join('/usr/lib/postgresql', majors[0]!, 'bin');
}

function userIds(name: string): { uid: number; gid: number } {
  const r = spawnSync('id', ['-u', name], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', name], { encoding: 'utf8' });
  if (r.status !== 0 || g.status !== 0) throw new Error(`no user ${name} to run PostgreSQL as`);
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}
