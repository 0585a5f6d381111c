/**
 * The homeserver client: Node's built-in fetch, the access token in a header (never in a URL or a
 * log line), retries for what a retry can fix, and one clear ToolError for what it cannot.
 *
 * Retry budget (docs/exit-codes.md): network errors and 5xx answers are retried with exponential
 * backoff starting at `retryBaseMs` (1 s) and capped at `retryCapMs` (16 s), at most `maxAttempts`
 * (8) attempts per request, about 80 s of outage in all; 429 answers wait `retry_after_ms`
 * and do not count against the attempts up to 50 waits.
 */
import { envNumber } from '../environment.js';
import { ToolError } from '../errors.js';
import { MatrixError } from './errors.js';

export interface RetryPolicy {
  maxAttempts: number;
  retryBaseMs: number;
  retryCapMs: number;
  /** Per-request timeout. */
  timeoutMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: envNumber('MIGRATION_RETRY_ATTEMPTS', 8),
  retryBaseMs: envNumber('MIGRATION_RETRY_BASE_MS', 1000),
  retryCapMs: envNumber('MIGRATION_RETRY_CAP_MS', 16_000),
  timeoutMs: envNumber('MIGRATION_REQUEST_TIMEOUT_MS', 120_000),
};

export interface RequestOptions {
  query?: Record<string, string>;
  body?: unknown;
  /** A body already serialized (large uploads are built once, not re-stringified per retry). */
  rawBody?: string | Uint8Array<ArrayBuffer>;
  /** Statuses the caller handles itself (no retry, no ToolError). */
  expect?: number[];
  /**
   * Hand a success's body to this reader as it arrives, instead of parsing it (a room's backup
   * can be tens of MB); resolve to what it returns. A body cut short is retried like a reset
   * connection: the reader is called again, from the start of a new answer.
   */
  readBody?(chunks: AsyncIterable<Uint8Array>): Promise<unknown>;
  /** Attempts for this request (default: the policy's); 1 for a quick look that must not hold a run up. */
  maxAttempts?: number;
  /**
   * Called on a 5xx answer, before it is retried or given up on: a 5xx can mean a state no retry
   * changes (Dendrite answers 500 to an upload into a deleted backup version), which the caller
   * can find out another way and end with its own error (thrown from here).
   */
  onServerError?(error: MatrixError): Promise<void>;
}

export interface ClientEvents {
  onRetry?(info: { attempt: number; delayMs: number; reason: string }): void;
}

const TLS_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export class MatrixClient {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly accessToken: string,
    readonly retry: RetryPolicy = DEFAULT_RETRY,
    private readonly events: ClientEvents = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  /** JSON request with retries. Resolves to the parsed body (its text with `textResponse`), or throws ToolError / MatrixError. */
  async request<T = Record<string, unknown>>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
    const body = opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    const maxAttempts = opts.maxAttempts ?? this.retry.maxAttempts;
    let attempt = 0;
    let rateLimitWaits = 0;
    for (;;) {
      attempt++;
      let response: Response;
      try {
        response = await fetch(url, {
          method,
          headers: {
            authorization: `Bearer ${this.accessToken}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
            ...(typeof body === 'object' ? { 'content-length': String(body.length) } : {}),
          },
          ...(typeof body === 'object' ? uncopiedBody(body) : { body }),
          signal: AbortSignal.timeout(this.retry.timeoutMs),
        });
      } catch (e) {
        const tls = tlsError(e);
        if (tls) throw tls;
        const reason = networkReason(e);
        if (attempt >= maxAttempts) {
          throw new ToolError(
            'HOMESERVER_UNREACHABLE',
            `the homeserver ${this.baseUrl} could not be reached after ${attempt} attempts (${reason})`,
            'check HOMESERVER_URL and the network, then rerun: progress so far is kept',
          );
        }
        await this.backoff(attempt, reason);
        continue;
      }

      if (response.ok && opts.readBody) {
        const body = bodyChunks(response);
        try {
          return (await opts.readBody(body.chunks)) as T;
        } catch (e) {
          if (!body.cut) throw e;
          if (attempt >= maxAttempts) {
            throw new ToolError('HOMESERVER_UNREACHABLE', `the homeserver ${this.baseUrl} kept cutting its answers short`, 'check the network or proxy in front of the homeserver, then rerun');
          }
          await this.backoff(attempt, 'response cut short');
          continue;
        }
      }
      const text = await response.text().catch(() => undefined);
      if (text === undefined) {
        // the body was cut halfway: as retryable as a reset connection
        if (attempt >= maxAttempts) {
          throw new ToolError('HOMESERVER_UNREACHABLE', `the homeserver ${this.baseUrl} kept cutting its answers short`, 'check the network or proxy in front of the homeserver, then rerun');
        }
        await this.backoff(attempt, 'response cut short');
        continue;
      }
      const json = parseJson(text);
      if (response.ok) {
        if (json === undefined) throw notMatrix(this.baseUrl, response);
        return json as T;
      }
      const error = new MatrixError(
        response.status,
        typeof json?.errcode === 'string' ? json.errcode : undefined,
        typeof json?.error === 'string' ? json.error : `HTTP ${response.status}`,
        json ?? {},
      );
      if (opts.expect?.includes(response.status)) throw error;
      if (response.status === 429) {
        rateLimitWaits++;
        if (rateLimitWaits > 50) throw new ToolError('HOMESERVER_UNREACHABLE', `the homeserver kept rate-limiting ${method} ${path}`, 'wait a while and rerun: progress so far is kept');
        attempt--; // rate limiting is the server pacing us, not a failure
        await this.sleep(error.retryAfterMs ?? this.delayFor(rateLimitWaits), 'rate limited (429)');
        continue;
      }
      if (response.status >= 500 || response.status === 408) {
        if (response.status >= 500) await opts.onServerError?.(error);
        if (attempt >= maxAttempts) {
          throw new ToolError('HOMESERVER_UNREACHABLE', `the homeserver answered ${response.status} to ${method} ${path} ${attempt} times`, 'check the homeserver\'s health and logs, then rerun: progress so far is kept');
        }
        await this.backoff(attempt, `HTTP ${response.status}`);
        continue;
      }
      if (response.status === 401 && (error.errcode === 'M_UNKNOWN_TOKEN' || error.errcode === 'M_MISSING_TOKEN')) {
        throw new ToolError('AUTH', `the homeserver rejected the access token (${error.errcode})`, 'set ACCESS_TOKEN to a valid token of the bot\'s user (log in again to get one)');
      }
      if (json === undefined) throw notMatrix(this.baseUrl, response);
      throw error;
    }
  }

  private delayFor(attempt: number): number {
    return Math.min(this.retry.retryCapMs, this.retry.retryBaseMs * 2 ** (attempt - 1));
  }

  private backoff(attempt: number, reason: string): Promise<void> {
    return this.sleep(this.delayFor(attempt), reason, attempt);
  }

  private sleep(delayMs: number, reason: string, attempt = 0): Promise<void> {
    this.events.onRetry?.({ attempt, delayMs, reason });
    return new Promise((r) => setTimeout(r, delayMs));
  }
}

/**
 * A byte body that fetch sends from our buffer: given a Uint8Array, undici copies it whole before
 * sending, so each upload request in flight held its body twice (8 MiB bodies: 16 MiB a request).
 * A stream of the same bytes, with its length declared, goes out as it is (no chunked encoding);
 * a fresh stream per attempt, as a stream is read once.
 */
function uncopiedBody(bytes: Uint8Array): { body: ReadableStream<Uint8Array>; duplex: 'half' } {
  return {
    body: new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes);
        controller.close();
      },
    }),
    duplex: 'half',
  };
}

/** A response's body as chunks, and whether reading it failed (the connection, not the reader). */
function bodyChunks(response: Response): { chunks: AsyncIterable<Uint8Array>; cut: boolean } {
  const state = { cut: false, chunks: (async function* () {})() as AsyncIterable<Uint8Array> };
  state.chunks = (async function* () {
    if (!response.body) return;
    const reader = response.body.getReader();
    try {
      for (;;) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (e) {
          state.cut = true;
          throw e;
        }
        if (next.done) return;
        yield next.value;
      }
    } finally {
      reader.releaseLock();
      if (!state.cut) await response.body.cancel().catch(() => undefined);
    }
  })();
  return state;
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function notMatrix(baseUrl: string, response: Response): ToolError {
  const type = response.headers.get('content-type') ?? 'no content type';
  return new ToolError(
    'NOT_A_HOMESERVER',
    `${baseUrl} answered HTTP ${response.status} with ${type}, not Matrix JSON: it is not a Matrix homeserver's client API`,
    'set HOMESERVER_URL to the homeserver\'s client API base URL (what /.well-known/matrix/client names, e.g. https://matrix.example.org)',
  );
}

function causeCode(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let i = 0; i < 5 && cur; i++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

function tlsError(e: unknown): ToolError | undefined {
  const code = causeCode(e);
  if (!code || !TLS_CODES.has(code)) return undefined;
  return new ToolError(
    'TLS',
    `the homeserver's TLS certificate was refused (${code})`,
    'if the homeserver uses a private CA, pass its certificate with --ca-file FILE (CA_FILE) and rerun; never disable verification',
  );
}

function networkReason(e: unknown): string {
  if ((e as Error)?.name === 'TimeoutError') return 'timed out';
  return causeCode(e) ?? (e as Error)?.message ?? 'network error';
}
