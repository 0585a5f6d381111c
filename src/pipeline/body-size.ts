/**
 * How large the next upload request may be, adapted from how long the homeserver takes to answer.
 *
 * Each `PUT /room_keys/keys` costs the server some work per key (look the keys up, insert them)
 * and some per request. Synapse's per-request part grows with the backup: it counts the user's
 * keys anew for every answer (`SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version
 * = ?`, under the user's upload lock), which on PostgreSQL took 45% of a 1M-key upload with 2 MiB
 * bodies and 58% of the first 2M keys of a 5M one (docs/benchmarks.md, the PostgreSQL section;
 * adaptive bodies made those 2M keys 2.37× faster). A distant
 * server adds its round trip to every request as well. Fewer, larger requests pay those fewer
 * times, but a body is held in memory while it is gathered, built and in flight, so bodies grow
 * only where that pays, and never past a ceiling.
 *
 * How: a request's service time is measured from the moment the server could start on it (when
 * it was sent, or when the previous answer came, whichever is later: one user's uploads are
 * serialized). Every few requests the limit is doubled on trial; if the larger requests cost at
 * least 10% less per key, the limit stays doubled and the next doubling is tried at once, else it
 * goes back and is tried again later (the count grows with the backup, so what did not pay at
 * 100k keys pays at 1M). A 413 halves the limit and caps it there.
 */

/** Answers whose median per-key time one decision compares. */
const WINDOW = 5;
/** How much cheaper per key the doubled requests must be to keep them. */
const GAIN = 0.1;
/** Windows at the same limit before a doubling that did not pay is tried again. */
const RETRY_WINDOWS = 8;

/**
 * The default ceiling: 12 MiB, under Synapse's own limit (12.5 MiB where it serves no media; 50
 * MiB where it does). Upload of the 1M long-lived store, whole process (`npx tsx
 * scripts/bench/body-limit.ts STORE BYTES[:IN_FLIGHT]`, 2026-12-05): 2 MiB bodies 83.5 s, peak
 * RSS 147 MB; 8 MiB 68.8–72.9 s, 185–186 MB; 12 MiB 66.9–68.1 s, 172–184 MB; 16 MiB 67.4 s, 197 MB.
 * Past 8 MiB memory stops following the body; the count, paid once a request, keeps falling.
 * Since bodies are built in reused buffers (`body-pool.ts`): 2 MiB 82.4 s, 104 MB; 12 MiB 70.5 s,
 * 123 MB (the machine also busy writing a store: times are high).
 */
export const DEFAULT_MAX_BODY_LIMIT = 12 * 1024 * 1024;

/**
 * The first request bodies: up to 2 MiB (about 2,300 keys). Synapse answers each upload with
 * the backup's key count, which it counts anew (a scan of the user's keys) under the user's upload
 * lock, so the fewer the requests, the less of that; but every megabyte of body is held twice
 * over while in flight (two requests, and the keys gathering for the next). Against a local
 * Synapse, the 1M store (docs/performance-notes.md): 1 MB bodies 102–128 s, peak RSS 140 MB;
 * 2 MiB 65 s, 149 MB; 4 MiB 55–81 s, 187 MB; 8 MiB 48–57 s, 199–217 MB; the 10k store 108–121 MB with
 * any of them. 2 MiB cuts the time by a third to a half and keeps memory flat (1.35× the 10k
 * store's); `--body-limit` trades memory for speed. A proxy with a smaller limit (nginx's default
 * is 1 MB; Synapse's own is 12.5 MiB, 50 MiB with its media repository) answers 413, and each 413
 * halves the limit for the rest of the run.
 */
export const DEFAULT_BODY_LIMIT = 2 * 1024 * 1024;

/**
 * The start and the ceiling from what the user gave: a `--body-limit` given alone is a limit (a
 * proxy's, say), not a start; `--max-body-limit` alone also caps the start.
 */
export function bodyLimits(o: { bodyLimit?: number; maxBodyLimit?: number }): { bodyLimit: number; maxBodyLimit: number } {
  const maxBodyLimit = o.maxBodyLimit ?? o.bodyLimit ?? DEFAULT_MAX_BODY_LIMIT;
  return { bodyLimit: Math.min(o.bodyLimit ?? DEFAULT_BODY_LIMIT, maxBodyLimit), maxBodyLimit };
}

export interface Answer {
  keys: number;
  bytes: number;
  /** When the request was sent and answered (ms, performance.now()). */
  sentAt: number;
  answeredAt: number;
}

export class BodySizer {
  private window: number[] = [];
  private lastAnswerAt = 0;
  private ceiling: number;
  /** The limit and per-key time before the doubling on trial, if one is. */
  private trial: { limit: number; perKeyMs: number } | undefined;
  /** Windows until the next trial (the first window warms up: a connection, a JIT). */
  private wait = 1;

  constructor(
    private current: number,
    ceiling: number,
    /** Told each time a larger limit is kept: the limit, and the per-key times before and after. */
    private readonly onGrow?: (limit: number, beforeMs: number, afterMs: number) => void,
  ) {
    this.ceiling = Math.max(current, ceiling);
  }

  get limit(): number {
    return this.current;
  }

  answered(a: Answer): void {
    const serviceMs = a.answeredAt - Math.max(a.sentAt, this.lastAnswerAt);
    this.lastAnswerAt = Math.max(this.lastAnswerAt, a.answeredAt);
    if (a.keys === 0 || serviceMs <= 0) return;
    if (this.current >= this.ceiling && !this.trial) return;
    this.window.push(serviceMs / a.keys);
    if (this.window.length < WINDOW) return;
    const perKeyMs = median(this.window);
    this.window = [];
    if (this.trial) {
      const before = this.trial;
      this.trial = undefined;
      if (perKeyMs < (1 - GAIN) * before.perKeyMs) {
        this.onGrow?.(this.current, before.perKeyMs, perKeyMs);
        this.tryDoubling(perKeyMs);
      } else {
        this.current = before.limit;
        this.wait = RETRY_WINDOWS;
      }
      return;
    }
    if (--this.wait > 0) return;
    this.tryDoubling(perKeyMs);
  }

  private tryDoubling(perKeyMs: number): void {
    if (this.current >= this.ceiling) return;
    this.trial = { limit: this.current, perKeyMs };
    this.current = Math.min(2 * this.current, this.ceiling);
  }

  /** The server (or a proxy) refused a body as too large: half, and never above this again. */
  refused(): number {
    this.current = Math.max(4096, Math.floor(this.current / 2));
    this.ceiling = this.current;
    this.trial = undefined;
    this.window = [];
    return this.current;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
