/** Options of the commands that talk to the homeserver, and the step context built from them. */
import path from 'node:path';
import { Option } from 'clipanion';
import { MIGRATION_FILES } from '../config.js';
import { setting } from '../environment.js';
import { ToolError } from '../errors.js';
import { MatrixClient } from '../matrix/client.js';
import { ensurePrivateDir } from '../migration/atomic-file.js';
import { StateFile } from '../migration/state.js';
import type { StepContext } from '../steps/context.js';
import { BaseCommand } from './base.js';

/** Where the recovery key is (the path, for a `--json` result: never the key). */
export const keyFile = (migrationDir: string) => path.join(migrationDir, MIGRATION_FILES.recoveryKey);

export abstract class HomeserverCommand extends BaseCommand {
  homeserverUrl = Option.String('--homeserver-url', { description: 'The homeserver\'s client API base URL (HOMESERVER_URL)' });
  // Applied before the command runs (src/ca-file.ts); declared here so that it parses and shows in --help.
  caFile = Option.String('--ca-file', { description: 'PEM certificate of a private CA that signed the homeserver\'s certificate (CA_FILE)' });
  accessToken = Option.String('--access-token', { description: 'The bot\'s access token (ACCESS_TOKEN; prefer the variable: a flag shows in the process list)' });

  /** Whether the command cannot run without the homeserver (`convert` only checks a token it is given). */
  static homeserverRequired = true;

  private _client?: MatrixClient;

  /** A client when HOMESERVER_URL or ACCESS_TOKEN is given (both then needed), else none. */
  protected optionalClient(): MatrixClient | undefined {
    if (!setting(this.homeserverUrl, 'HOMESERVER_URL') && !setting(this.accessToken, 'ACCESS_TOKEN')) return undefined;
    return this.client();
  }

  protected override checkOptions(): void {
    if ((this.constructor as typeof HomeserverCommand).homeserverRequired) this.client();
    else this.optionalClient();
  }

  protected client(): MatrixClient {
    this._client ??= this.newClient();
    return this._client;
  }

  private newClient(): MatrixClient {
    const homeserverUrl = setting(this.homeserverUrl, 'HOMESERVER_URL');
    const accessToken = setting(this.accessToken, 'ACCESS_TOKEN');
    if (!homeserverUrl) {
      throw new ToolError('USAGE', 'HOMESERVER_URL is not set', 'set HOMESERVER_URL (or --homeserver-url) to the homeserver\'s client API base URL');
    }
    if (!/^https?:\/\/[^/]/.test(homeserverUrl)) {
      throw new ToolError('USAGE', `HOMESERVER_URL "${homeserverUrl}" is not an http(s) URL`, 'use the form https://matrix.example.org');
    }
    if (!accessToken) {
      throw new ToolError('USAGE', 'ACCESS_TOKEN is not set', 'set ACCESS_TOKEN to the bot\'s access token');
    }
    return new MatrixClient(homeserverUrl, accessToken, undefined, {
      onRetry: ({ delayMs, reason }) => this.out.warn(`homeserver: ${reason}; retrying in ${(delayMs / 1000).toFixed(1)} s`),
    });
  }

  /** Validates the options, prepares MIGRATION_DIR and builds the context the steps share. */
  protected async stepContext(): Promise<StepContext> {
    const loc = this.locations();
    const client = this.client();
    await ensurePrivateDir(loc.migrationDir);
    return {
      client,
      migrationDir: loc.migrationDir,
      state: new StateFile(loc.migrationDir),
      source: { cryptoStorePath: loc.cryptoStorePath, passphrase: loc.storePassphrase },
      out: this.out,
    };
  }
}
