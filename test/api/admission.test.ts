// Admission control over HTTP on the real engine and the tiny fixture package, with one batch
// slot (MAX_BATCH_SIZE 1) and a short queue (MAX_WAITING 3):
// - a flood of streamed requests: the excess is refused at once with 429 + Retry-After, as a
//   plain JSON error (never a 200 stream); /health and /metrics answer while generations run;
//   once the load drops every request is served again;
// - requests are admitted in arrival order;
// - REQUEST_TIMEOUT: a queued request past its deadline gets 503 deadline_exceeded, a running
//   one ends with finish_reason length; both are counted.
// Everything stays on loopback, with bounded loops.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createEngine, type LoadedEngine } from '../../src/engine/engine.js';
import { goldenPackages, packageDir } from '../support/golden.js';
import { assertError, parseSse, startApp, type TestApp } from './support/harness.js';

type Json = Record<string, any>;

const PACKAGE = 'tiny-random-qwen2-siglip';
const MAX_WAITING = 3;
const RETRY_AFTER = 2;

interface Sent {
  status: number;
  headers: Headers;
  /** The whole body; rejects if the request was aborted. */
  body: Promise<string>;
}

/** POSTs a chat completion; resolves when the response headers arrive. */
async function send(url: string, body: object, signal?: AbortSignal): Promise<Sent> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello there' }], temperature: 0, ...body }),
    signal,
  });
  const text = res.text();
  text.catch(() => undefined); // aborted on purpose
  return { status: res.status, headers: res.headers, body: text };
}

/** A streamed generation long enough to hold the batch slot until it is aborted. */
function longStream(url: string, signal: AbortSignal): Promise<Sent> {
  return send(url, { stream: true, max_tokens: 2000, ignore_eos: true }, signal);
}

async function until(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  for (const start = Date.now(); !condition(); await sleep(5)) {
    if (Date.now() - start > timeoutMs) assert.fail(`timed out waiting for ${what}`);
  }
}

/**
 * Closes an app whose clients are gone. fetch's pool may have opened a spare connection that
 * never carried a request; the server counts it as busy and app.close() would wait for its
 * keep-alive timeout (72 s), so such connections are closed outright.
 */
async function closeApp(app: TestApp | undefined): Promise<void> {
  if (!app) return;
  const closing = app.close();
  app.app.server.closeAllConnections();
  await closing;
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe(`admission control over HTTP (${PACKAGE})`, { skip: goldenPackages().includes(PACKAGE) ? false : 'no fixture package' }, () => {
  let engine: LoadedEngine;
  let t: TestApp;

  const idle = (): Promise<void> => until('the engine to be idle', () => engine.stats().running === 0 && engine.stats().waiting === 0);

  before(async () => {
    engine = await createEngine(packageDir(PACKAGE), {
      warmup: false,
      intraOpNumThreads: 1,
      visionIntraOpNumThreads: 1,
      maxBatchSize: 1,
      maxWaiting: MAX_WAITING,
    });
    t = await startApp({ engine: null, phase: 'loading', listen: true, config: { retryAfterSeconds: RETRY_AFTER } });
    await t.host.attach(engine);
  });
  after(async () => {
    await closeApp(t);
    await engine?.close();
  });

  test('a flood: the excess gets 429 + Retry-After at once, probes answer, then the server recovers', async () => {
    const N = 16;
    const capacity = 1 + MAX_WAITING; // one batch slot and the queue
    const abort = new AbortController();
    const settled: (Sent | Error)[] = [];
    const flood = Array.from({ length: N }, () =>
      longStream(t.url, abort.signal).then(
        (r) => void settled.push(r),
        (e: Error) => void settled.push(e),
      ),
    );
    try {
      // Refusals come back while the admitted requests are still running or queued.
      const refusals = (): Sent[] => settled.filter((r): r is Sent => !(r instanceof Error) && r.status !== 200);
      await until('the refusals', () => refusals().length >= N - capacity);
      await until('the admitted request to stream', () => settled.length >= N - capacity + 1);
      const refused = refusals();
      assert.equal(refused.length, N - capacity, `statuses: ${settled.map((r) => (r instanceof Error ? r.message : r.status))}`);
      for (const r of refused) {
        // a proper status and a JSON error, not a 200 event stream
        assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
        assertError({ statusCode: r.status, body: await r.body, headers: Object.fromEntries(r.headers) }, 429, 'overloaded');
        assert.equal(r.headers.get('retry-after'), String(RETRY_AFTER));
      }
      assert.equal(engine.stats().running, 1, 'the admitted request still runs');
      assert.equal(engine.stats().waiting, MAX_WAITING);

      // Probes answer during the overload, while the generations are in flight.
      const health = await fetch(`${t.url}/health`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok' });
      const metrics = await fetch(`${t.url}/metrics`);
      assert.equal(metrics.status, 200);
      const text = await metrics.text();
      assert.equal(sample(text, `tinyllava_num_requests_running{model_name="${PACKAGE}"}`), 1);
      assert.equal(sample(text, `tinyllava_num_requests_waiting{model_name="${PACKAGE}"}`), MAX_WAITING);
      assert.equal(sample(text, `tinyllava_request_errors_total{model_name="${PACKAGE}",type="rate_limit_error",code="overloaded"}`), N - capacity);
      assert.equal(engine.stats().running, 1, 'still generating after the probes answered');
    } finally {
      abort.abort();
      await Promise.all(flood);
    }

    // Load gone: every new request is served, streamed and not, concurrent and one by one.
    await idle();
    const streamed = await Promise.all(Array.from({ length: capacity }, () => send(t.url, { stream: true, max_tokens: 4 })));
    for (const r of streamed) {
      assert.equal(r.status, 200);
      const events = parseSse(await r.body) as Json[];
      assert.equal(events.at(-1)!.choices[0].finish_reason, 'length');
    }
    for (let i = 0; i < 3; i++) {
      const r = await send(t.url, { max_tokens: 4 });
      assert.equal(r.status, 200, await r.body);
      assert.equal((JSON.parse(await r.body) as Json).usage.completion_tokens, 4);
    }
  });

  test('under a full batch, waiting requests are admitted in arrival order', async () => {
    await idle();
    const abort = new AbortController();
    const running = await longStream(t.url, abort.signal);
    assert.equal(running.status, 200);
    const finished: number[] = [];
    const queued: Promise<void>[] = [];
    try {
      for (let i = 0; i < MAX_WAITING; i++) {
        // each one queued before the next is sent, so that arrival order is known
        queued.push(
          send(t.url, { max_tokens: 8, ignore_eos: true }).then(async (r) => {
            assert.equal(r.status, 200, await r.body);
            finished.push(i);
          }),
        );
        await until(`request ${i} to queue`, () => engine.stats().waiting === i + 1);
      }
      assert.equal(engine.stats().running, 1);
    } finally {
      abort.abort(); // frees the slot: the queue drains one at a time
    }
    await Promise.all(queued);
    assert.deepEqual(finished, [0, 1, 2]);
  });

  test('REQUEST_TIMEOUT: 503 deadline_exceeded in the queue, finish_reason length when running; both counted', async () => {
    await idle();
    // A second app over the same engine, with a deadline; the first one (none) holds the slot.
    const timed = await startApp({ engine, listen: true, config: { requestTimeoutSeconds: 0.25, retryAfterSeconds: RETRY_AFTER } });
    const abort = new AbortController();
    try {
      const holder = await longStream(t.url, abort.signal);
      assert.equal(holder.status, 200);
      const queued = await send(timed.url, { stream: true, max_tokens: 8 });
      assertError({ statusCode: queued.status, body: await queued.body, headers: Object.fromEntries(queued.headers) }, 503, 'deadline_exceeded');
      assert.equal(engine.stats().running, 1, 'refused while the other request still runs');
      abort.abort();
      await idle();

      const cut = await send(timed.url, { stream: true, max_tokens: 2000, ignore_eos: true, stream_options: { include_usage: true } });
      assert.equal(cut.status, 200);
      const events = parseSse(await cut.body) as Json[];
      assert.equal(events.at(-2)!.choices[0].finish_reason, 'length');
      const usage = events.at(-1)!.usage as Json;
      assert.ok(usage.completion_tokens > 0 && usage.completion_tokens < 2000, `${usage.completion_tokens} tokens`);

      const text = await (await fetch(`${timed.url}/metrics`)).text();
      assert.equal(sample(text, `tinyllava_request_timeouts_total{model_name="${PACKAGE}"}`), 2);
      assert.equal(sample(text, `tinyllava_request_errors_total{model_name="${PACKAGE}",type="server_error",code="deadline_exceeded"}`), 1);
      assert.equal(sample(text, `tinyllava_request_success_total{model_name="${PACKAGE}",finished_reason="length"}`), 1);
    } finally {
      abort.abort();
      await closeApp(timed);
    }
  });
});
