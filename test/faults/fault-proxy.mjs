#!/usr/bin/env node
/**
 * A fault-injecting HTTP proxy in front of the real Synapse, run as its own process by the tests.
 *
 *   node test/faults/fault-proxy.mjs --target http://127.0.0.1:8008 [--rate 0.15] [--faults reset,500,502,503,429,delay,cut]
 *        [--seed 1] [--path /room_keys] [--max-body BYTES] [--html] [--stats FILE]
 *
 * Prints {"port":N} once listening. Each request whose path contains --path (default: every
 * request) draws a fault with probability --rate from a seeded generator:
 *   reset  the connection is destroyed after the request arrives (nothing forwarded)
 *   500/502/503  an error answer (502 as an HTML page, like a reverse proxy), nothing forwarded
 *   429    M_LIMIT_EXCEEDED with retry_after_ms, nothing forwarded
 *   delay  forwarded after 0.3–1.5 s
 *   cut    forwarded; the homeserver's answer is cut halfway and the connection destroyed
 *          (the server did the work: the client must not assume it did not)
 * --max-body answers 413 to larger bodies as nginx does (client_max_body_size): as soon as the
 * headers announce one, before its body has arrived, then reads and discards the rest;
 * --html answers every request with an HTML page.
 * --dendrite answers an upload of room keys as Dendrite 0.13 does where Synapse answers 404 (the
 * version deleted, or no backup at all): 500 {"message":"PerformKeyBackup: backup was deleted"}, no errcode.
 * --per-request-ms MS holds each request on --path MS ms before forwarding it, one at a time: a
 * cost per request under the user's lock, as Synapse's count of the whole backup on every upload.
 * --stats writes the counts of each fault to FILE after every request.
 */
import http from 'node:http';
import { writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const target = new URL(opt('--target'));
const rate = Number(opt('--rate', '0.15'));
const faults = opt('--faults', 'reset,500,502,503,429,delay,cut').split(',');
const onlyPath = opt('--path', '');
const maxBody = Number(opt('--max-body', '0'));
const html = args.includes('--html');
const dendrite = args.includes('--dendrite');
const statsFile = opt('--stats');
const perRequestMs = Number(opt('--per-request-ms', '0'));
let serialized = Promise.resolve();

// mulberry32: reproducible fault sequences for a given seed
let seed = Number(opt('--seed', '1')) >>> 0;
const random = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const stats = { requests: 0, forwarded: 0 };
const count = (name) => {
  stats[name] = (stats[name] ?? 0) + 1;
  if (statsFile) writeFileSync(statsFile, JSON.stringify(stats));
};

function forward(req, body) {
  return new Promise((resolve, reject) => {
    const headers = { ...req.headers, host: target.host, 'content-length': String(body.length) };
    const upstream = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    upstream.on('error', reject);
    upstream.end(body);
  });
}

const json = (res, status, body) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

const server = http.createServer(async (req, res) => {
  if (maxBody && Number(req.headers['content-length']) > maxBody) {
    count('413');
    json(res, 413, { errcode: 'M_TOO_LARGE', error: 'Request body too large' });
    // Like nginx's lingering close: the client may still be sending; its bytes are discarded.
    return req.resume();
  }
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const body = Buffer.concat(chunks);
  stats.requests++;
  if (html) {
    count('html');
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end('<!doctype html><title>Welcome</title><p>It works!</p>');
  }
  if (maxBody && body.length > maxBody) {
    count('413');
    return json(res, 413, { errcode: 'M_TOO_LARGE', error: 'Request body too large' });
  }
  const eligible = !onlyPath || req.url.includes(onlyPath);
  if (eligible && perRequestMs) {
    const turn = serialized.then(() => new Promise((r) => setTimeout(r, perRequestMs)));
    serialized = turn;
    await turn;
    count('held');
  }
  const fault = eligible && random() < rate ? faults[Math.floor(random() * faults.length)] : undefined;
  try {
    switch (fault) {
      case 'reset':
        count('reset');
        return req.socket.destroy();
      case '500':
      case '503':
        count(fault);
        return json(res, Number(fault), { errcode: 'M_UNKNOWN', error: 'Internal server error' });
      case '502':
        count('502');
        res.writeHead(502, { 'content-type': 'text/html' });
        return res.end('<html><body><h1>502 Bad Gateway</h1></body></html>');
      case '429':
        count('429');
        return json(res, 429, { errcode: 'M_LIMIT_EXCEEDED', error: 'Too many requests', retry_after_ms: 200 });
      case 'delay':
        count('delay');
        await new Promise((r) => setTimeout(r, 300 + Math.floor(random() * 1200)));
        break;
      case 'cut': {
        count('cut');
        const up = await forward(req, body);
        stats.forwarded++;
        res.writeHead(up.status, { 'content-type': up.headers['content-type'] ?? 'application/json', 'content-length': up.body.length });
        res.write(up.body.subarray(0, Math.floor(up.body.length / 2)));
        return setTimeout(() => req.socket.destroy(), 20);
      }
      default:
    }
    const up = await forward(req, body);
    stats.forwarded++;
    if (dendrite && req.method === 'PUT' && req.url.includes('/room_keys/keys') && up.status === 404) {
      count('dendrite-500');
      return json(res, 500, { message: 'PerformKeyBackup: backup was deleted' });
    }
    if (statsFile) writeFileSync(statsFile, JSON.stringify(stats));
    const headers = { 'content-type': up.headers['content-type'] ?? 'application/json', 'content-length': up.body.length };
    res.writeHead(up.status, headers);
    res.end(up.body);
  } catch (e) {
    json(res, 502, { errcode: 'M_UNKNOWN', error: `proxy: ${e.message}` });
  }
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
