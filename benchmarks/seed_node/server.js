'use strict';
/**
 * The seed's logic as a benchmark service: many calls in one Node.js
 * process, handed over by an HTTP intake like ivrproto's.
 *
 *   node benchmarks/seed_node/server.js PORT
 *
 * with GENESYS_BASE_URL, CLIENT_ID and CLIENT_SECRET in the environment
 * (benchmarks/run.py --service seed-node does this).  Serves, on
 * 127.0.0.1:PORT:
 *
 * - POST /v1/calls  {"callControlId": ..., "externalId": ...} -> 202, as
 *   ivrproto's intake does (400 for a bad body, 409 for a call already in
 *   progress, 413 over 64 KiB); no signature check (run.py never sets an
 *   intake secret, and the intake listens on loopback only);
 * - GET /v1/stats (the counters run.py reads), GET /v1/calls, /healthz, /readyz.
 *
 * Optional: SEED_CONFIRM_DELAY (seconds between the confirmation and the
 * transfer, default 0.05 as in run.py's service config; the seed waited
 * 1.5-2 s), SEED_PROFILE_BUDGET (0.8 s), SEED_NODE_LOG=1 (the seed's three
 * console lines per call, without the caller id; off by default: ivrproto
 * is compared with the cheapest version of the seed), IVR_BENCH_GC_FILE
 * (where the garbage collector's pauses are written at exit, as
 * benchmarks/service_boot.py does; SIGUSR2 forgets the pauses so far).
 */

const fs = require('fs');
const http = require('http');
const { PerformanceObserver, constants } = require('perf_hooks');
const { Platform } = require('./platform');
const { Call } = require('./call');

const MAX_BODY = 64 * 1024;
const MAX_ID = 256;
const JSON_HEADERS = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' };

function newStats() {
  return {
    calls: { started: 0, ended: 0, rejected: 0 },
    outcomes: {},
    transfers: {},
    profiles: {
      lookups: { lookups: 0, hits: 0, found: 0, not_found: 0, failed: 0, timed_out: 0 },
      cache_entries: 0,
      breaker: 'closed',
    },
    fallbacks: { default_menu: 0 },
  };
}

function makeService(env) {
  const platform = new Platform(
    env.GENESYS_BASE_URL || 'https://api.us-east-1.mypurecloud.com',
    env.CLIENT_ID || '', env.CLIENT_SECRET || '');
  const logging = env.SEED_NODE_LOG === '1';
  const active = new Map();
  const service = {
    platform,
    active,
    stats: newStats(),
    options: {
      confirmDelayMs: Number(env.SEED_CONFIRM_DELAY || 0.05) * 1000,
      profileBudgetMs: Number(env.SEED_PROFILE_BUDGET || 0.8) * 1000,
    },
    log: logging ? (line) => console.log(line) : () => {},
    ended(call, outcome) {
      if (active.get(call.id) === call) active.delete(call.id);
      service.stats.calls.ended++;
      const kind = outcome.split(' ')[0];
      service.stats.outcomes[kind] = (service.stats.outcomes[kind] || 0) + 1;
    },
  };
  return service;
}

/** The intake's answer: JSON, with its length (the load generator needs it). */
function answer(res, status, body, headers) {
  const text = JSON.stringify(body);
  res.writeHead(status, Object.assign(
    { 'Content-Length': Buffer.byteLength(text) }, JSON_HEADERS, headers || {}));
  res.end(text);
}

function validId(value) {
  // 1 to 256 printable characters, as ivrproto's intake asks
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_ID
    && !/[\u0000-\u001f\u007f]/.test(value);
}

function postCall(service, req, res) {
  const chunks = [];
  let size = 0;
  let refused = false;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY && !refused) {
      refused = true;
      answer(res, 413, { error: 'request body too large' }, { Connection: 'close' });
      req.destroy();
    } else if (!refused) {
      chunks.push(chunk);
    }
  });
  req.on('end', () => {
    if (refused) return;
    let body;
    try {
      body = JSON.parse(chunks.length === 1 ? chunks[0].toString() : Buffer.concat(chunks).toString());
    } catch (error) {
      answer(res, 400, { error: 'body is not valid JSON' });
      return;
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      answer(res, 400, { error: 'body must be a JSON object' });
      return;
    }
    for (const field of ['callControlId', 'externalId']) {
      if (!validId(body[field])) {
        answer(res, 400, { error: `${field} must be a string of 1 to ${MAX_ID} printable characters`, field });
        return;
      }
    }
    const id = body.callControlId;
    if (service.active.has(id)) {
      service.stats.calls.rejected++;
      answer(res, 409, { error: 'a session for this call is already active' });
      return;
    }
    const call = new Call(service, id, body.externalId);
    service.active.set(id, call);
    service.stats.calls.started++;
    call.start();
    answer(res, 202, { callControlId: id, state: 'connecting' },
      { Location: `/v1/calls/${encodeURIComponent(id)}` });
  });
}

function handle(service, req, res) {
  const path = req.url.split('?', 1)[0];
  const get = req.method === 'GET' || req.method === 'HEAD';
  if (path === '/v1/calls') {
    if (req.method === 'POST') return postCall(service, req, res);
    if (get) return answer(res, 200, { active: service.active.size });
    return answer(res, 405, { error: 'method not allowed' }, { Allow: 'GET, HEAD, POST' });
  }
  const reads = {
    '/v1/stats': () => [200, Object.assign({}, service.stats, {
      calls: Object.assign({}, service.stats.calls, { active: service.active.size }),
      tokens: { requests: service.platform.stats.requests, failures: service.platform.stats.failures },
    })],
    '/healthz': () => [200, { status: 'ok' }],
    '/readyz': () => (service.platform.hasToken()
      ? [200, { status: 'ready' }] : [503, { status: 'not ready', reason: 'no access token' }]),
  };
  if (!reads[path]) return answer(res, 404, { error: 'no such resource' });
  if (!get) return answer(res, 405, { error: 'method not allowed' }, { Allow: 'GET, HEAD' });
  const [status, body] = reads[path]();
  return answer(res, status, body);
}

const PROBE_MS = 10;

/** Count, p50, p99 and max (ms) of durations in ms, as stallwatch.py writes them. */
function distribution(values) {
  const v = values.slice().sort((a, b) => a - b);
  const at = (q) => (v.length ? Math.round(v[Math.min(v.length - 1, Math.floor(q * v.length))] * 100) / 100 : null);
  return { count: v.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: v.length ? Math.round(v[v.length - 1] * 100) / 100 : null };
}

/** Garbage collector pauses and event-loop lag, as stallwatch.py times CPython's. */
function watchGc(path) {
  const kinds = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'gen0',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'gen1',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'gen1',
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'gen2',
  };
  let pauses = { gen0: [], gen1: [], gen2: [] };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = kinds[entry.detail ? entry.detail.kind : entry.kind] || 'gen2';
      pauses[kind].push(entry.duration);
    }
  }).observe({ entryTypes: ['gc'] });
  // The event loop's lag as stallwatch.py times the Python services': a
  // timer every 10 ms notes how late it fired.
  let lags = [];
  let due = 0;
  const probe = () => {
    const now = performance.now();
    if (due) lags.push(Math.max(0, now - due));
    due = now + PROBE_MS;
    setTimeout(probe, PROBE_MS).unref();
  };
  setTimeout(probe, PROBE_MS).unref();
  process.on('SIGUSR2', () => { pauses = { gen0: [], gen1: [], gen2: [] }; lags = []; });
  return () => {
    const summary = { engine: 'v8', kinds: 'gen0 scavenge, gen1 incremental marking / weak callbacks, gen2 mark-compact' };
    for (const [gen, v] of Object.entries(pauses)) {
      summary[gen] = {
        count: v.length,
        max_ms: v.length ? Math.round(Math.max(...v) * 100) / 100 : null,
        total_ms: Math.round(v.reduce((a, b) => a + b, 0) * 10) / 10,
        over_5ms: v.filter((x) => x > 5).length,
      };
    }
    summary.pauses = distribution([].concat(pauses.gen0, pauses.gen1, pauses.gen2));
    summary.loop_lag = Object.assign(distribution(lags), { probe_interval_ms: PROBE_MS });
    fs.writeFileSync(path, JSON.stringify(summary));
  };
}

function main() {
  const port = Number(process.argv[2]);
  if (!Number.isInteger(port) || port <= 0) {
    console.error('usage: node server.js PORT');
    process.exit(2);
  }
  const service = makeService(process.env);
  const writeGc = process.env.IVR_BENCH_GC_FILE ? watchGc(process.env.IVR_BENCH_GC_FILE) : null;
  if (!writeGc) process.on('SIGUSR2', () => {});
  const server = http.createServer((req, res) => handle(service, req, res));
  server.keepAliveTimeout = 30000;
  server.headersTimeout = 11000;
  server.requestTimeout = 10000;
  server.listen({ port, host: '127.0.0.1', backlog: 1024 }, () => {
    console.log(`seed-node: intake on http://127.0.0.1:${port}, platform ${service.platform.base.origin}`);
  });
  const stop = () => {
    if (writeGc) writeGc();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // the first token now, so /readyz says ready before any call
  service.platform.getAccessToken().catch((error) => {
    console.error(`seed-node: ${error.message}`);
    process.exit(1);
  });
}

if (require.main === module) main();

module.exports = { makeService, handle };
