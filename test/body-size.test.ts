/**
 * Upload bodies grow when the homeserver's answer time is dominated by a cost per request (Synapse
 * on PostgreSQL: the count of the whole backup under the user's lock), and only then; never past
 * the ceiling, never past what a 413 refused. The server here is a model of one user's serialized
 * uploads: service = perRequest(backup size) + keys × perKey, requests two at a time.
 */
import test from 'ava';
import { BodySizer, bodyLimits, DEFAULT_BODY_LIMIT, DEFAULT_MAX_BODY_LIMIT } from '../src/pipeline/body-size.js';

const BYTES_PER_KEY = 900;

/** Uploads `total` keys through a model server; returns the limits used, request by request. */
function simulate(sizer: BodySizer, total: number, perKeyMs: number, perRequestMs: (backup: number) => number): number[] {
  const limits: number[] = [];
  let sent = 0;
  let serverFreeAt = 0;
  let clock = 0;
  while (sent < total) {
    const keys = Math.min(total - sent, Math.floor(sizer.limit / BYTES_PER_KEY));
    limits.push(sizer.limit);
    const start = Math.max(clock, serverFreeAt);
    const answeredAt = start + perRequestMs(sent) + keys * perKeyMs;
    sizer.answered({ keys, bytes: keys * BYTES_PER_KEY, sentAt: clock, answeredAt });
    serverFreeAt = answeredAt;
    clock += 1; // the client is fast: the next request is ready almost at once
    sent += keys;
  }
  return limits;
}

test('bodies stay at their start while the per-request cost is small (a doubling on trial goes back)', (t) => {
  const sizer = new BodySizer(DEFAULT_BODY_LIMIT, DEFAULT_MAX_BODY_LIMIT);
  const limits = simulate(sizer, 300_000, 0.08, () => 5);
  t.true(limits.some((l) => l > DEFAULT_BODY_LIMIT), 'a larger limit was tried');
  t.is(limits[limits.length - 1], DEFAULT_BODY_LIMIT, 'and not kept');
  t.true(limits.filter((l) => l > DEFAULT_BODY_LIMIT).length < limits.length / 4, 'trials are a small share of the requests');
});

test('bodies grow, up to the ceiling, when a count of the whole backup comes to dominate the answers', (t) => {
  const grown: { limit: number; at: number }[] = [];
  let requests = 0;
  const sizer = new BodySizer(DEFAULT_BODY_LIMIT, DEFAULT_MAX_BODY_LIMIT, (limit) => grown.push({ limit, at: requests }));
  // 0.35 µs per key already in the backup (Synapse's count on PostgreSQL, measured at 1M), 80 µs per key sent.
  const limits = simulate(sizer, 3_000_000, 0.08, (backup) => {
    requests++;
    return 0.00035 * backup;
  });
  t.true(grown.length > 0, 'the limit grew');
  t.is(Math.max(...limits), DEFAULT_MAX_BODY_LIMIT, 'up to the ceiling, not beyond');
  t.is(limits[limits.length - 1], DEFAULT_MAX_BODY_LIMIT);
  for (let i = 1; i < grown.length; i++) t.true(grown[i]!.limit <= 2 * grown[i - 1]!.limit, 'at most doubling per step');
  t.true(grown[0]!.at > 20, 'not before the count shows');
});

test('a constant cost per request (a distant homeserver) grows bodies from the start', (t) => {
  const sizer = new BodySizer(64 * 1024, 1024 * 1024);
  const limits = simulate(sizer, 100_000, 0.05, () => 300);
  t.is(limits[limits.length - 1], 1024 * 1024);
});

test('a 413 halves the limit and caps its growth there', (t) => {
  const sizer = new BodySizer(4 * 1024 * 1024, 16 * 1024 * 1024);
  t.is(sizer.refused(), 2 * 1024 * 1024);
  simulate(sizer, 3_000_000, 0.08, (backup) => 0.0005 * backup);
  t.is(sizer.limit, 2 * 1024 * 1024);
});

test('a --body-limit given alone is fixed; --max-body-limit alone caps the start', (t) => {
  t.deepEqual(bodyLimits({}), { bodyLimit: DEFAULT_BODY_LIMIT, maxBodyLimit: DEFAULT_MAX_BODY_LIMIT });
  t.deepEqual(bodyLimits({ bodyLimit: 1_000_000 }), { bodyLimit: 1_000_000, maxBodyLimit: 1_000_000 });
  t.deepEqual(bodyLimits({ maxBodyLimit: 1_000_000 }), { bodyLimit: 1_000_000, maxBodyLimit: 1_000_000 });
  t.deepEqual(bodyLimits({ bodyLimit: 1_000_000, maxBodyLimit: 4_000_000 }), { bodyLimit: 1_000_000, maxBodyLimit: 4_000_000 });
});
