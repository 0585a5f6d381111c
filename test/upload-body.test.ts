/**
 * Request bodies are spliced, as bytes, from the slices of a batch's fragments buffer: every key
 * lands under its room, whole, including keys and rooms whose IDs are not ASCII (a key file may
 * hold such session IDs), where byte offsets and string offsets differ.
 */
import test from 'ava';
import { BodyPool } from '../src/pipeline/body-pool.js';
import { batchEntries, buildBody } from '../src/pipeline/upload.js';

function entriesOf(keys: { room: string; fragment: string }[]) {
  const rooms = [...new Set(keys.map((k) => k.room))];
  const fragments = Buffer.from(keys.map((k) => k.fragment).join(''));
  const ends = new Uint32Array(keys.length);
  let end = 0;
  keys.forEach((k, i) => (ends[i] = end += Buffer.byteLength(k.fragment)));
  return batchEntries({ fragments, ends, roomOf: new Uint32Array(keys.map((k) => rooms.indexOf(k.room))), rooms });
}

test('a body files every key under its room, with non-ASCII IDs and values intact', (t) => {
  const entries = entriesOf([
    { room: '!a:example.org', fragment: '"s1":{"first_message_index":0}' },
    { room: '!b:ëxample.org', fragment: '"sé2":{"first_message_index":1}' },
    { room: '!a:example.org', fragment: '"s3":{"v":"ü…"}' },
    { room: '!b:ëxample.org', fragment: '"s4":{"first_message_index":4}' },
  ]);
  const body = buildBody(entries);
  t.deepEqual(JSON.parse(body.toString('utf8')), {
    rooms: {
      '!a:example.org': { sessions: { s1: { first_message_index: 0 }, s3: { v: 'ü…' } } },
      '!b:ëxample.org': { sessions: { sé2: { first_message_index: 1 }, s4: { first_message_index: 4 } } },
    },
  });
  // The entries now hold the body, not the batch's buffer (which can be freed while in flight).
  t.true(entries.every((e) => e.fragment.buffer === body.buffer));
  // Halves of a body (as a 413 splits them) make bodies of their own keys only.
  t.deepEqual(Object.keys(JSON.parse(buildBody(entries.slice(2, 3)).toString('utf8')).rooms['!a:example.org'].sessions), ['s3']);
});

test('a body without keys is an empty rooms object', (t) => {
  t.deepEqual(JSON.parse(buildBody([]).toString('utf8')), { rooms: {} });
});

test('bodies are built in buffers used again once answered, as many as are kept, grown with the limit', (t) => {
  const pool = new BodyPool(2);
  const keys = [
    { room: '!a:example.org', fragment: '"s1":{"first_message_index":0}' },
    { room: '!b:ëxample.org', fragment: '"sé2":{"first_message_index":1}' },
  ];
  const first = buildBody(entriesOf(keys), pool, 4096);
  t.true(first.equals(buildBody(entriesOf(keys))));
  t.is(first.buffer.byteLength, 4096);
  const second = buildBody(entriesOf(keys), pool, 4096);
  t.not(second.buffer, first.buffer);
  pool.give(first);
  pool.give(second);
  pool.give(second);
  t.is(pool.waiting, 2);
  // The next body is written into a buffer given back, and reads as its own bytes only.
  const third = buildBody(entriesOf(keys.slice(1)), pool, 4096);
  t.true(third.buffer === first.buffer || third.buffer === second.buffer);
  t.deepEqual(JSON.parse(third.toString('utf8')), { rooms: { '!b:ëxample.org': { sessions: { sé2: { first_message_index: 1 } } } } });
  // Past the limit the pool's buffers were made for: a new one, and the small ones are let go.
  const big = pool.take(10_000, 8192);
  t.is(big.buffer.byteLength, 10_000);
  t.is(pool.waiting, 0);
  pool.give(third);
  pool.give(big);
  pool.give(Buffer.alloc(1));
  t.is(pool.waiting, 2);
});
