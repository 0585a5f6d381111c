/** What every homeserver step needs: built once by the command, passed to each step. */
import type { Output } from '../log.js';
import type { MatrixClient } from '../matrix/client.js';
import type { StateFile } from '../migration/state.js';
import type { StoreSource } from '../store/sessions.js';

export interface StepContext {
  client: MatrixClient;
  migrationDir: string;
  state: StateFile;
  source: StoreSource;
  out: Output;
}
