// Work per request is bounded before it is done: a prompt that cannot fit is refused from its
// length without being tokenized (a 30 MB one once took 35 s of CPU and 3.6 GB), /health answers
// meanwhile, tokenization runs off the event loop, and connections that send slowly or sit idle
// are closed after HEADERS_TIMEOUT, BODY_TIMEOUT and KEEP_ALIVE_TIMEOUT (with a 408 in the
// envelope), while a slow stream, which is past its request, is not cut.

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createEngine, type LoadedEngine } from '../../src/engine/engine.js';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { packageDir } from '../support/golden.js';
import { chatBody, parseSse, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

const PACKAGE = 'tiny-random-qwen2-siglip';

describe('a worst-case prompt on the real engine', () => {
  let engine: LoadedEngine;
  let t: TestApp;
  let longestEncoded = 0;
  const encode = TextTokenizer.prototype.encode;

  before(async () => {
    // Every text the tokenizer is given, measured.
    TextTokenizer.prototype.encode = function (this: TextTokenizer, text: string, special?: boolean) {
      longestEncoded = Math.max(longestEncoded, text.length);
      return encode.call(this, text, special);
    };
    engine = await createEngine(packageDir(PACKAGE), { warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1 });
    t = await startApp({ engine: null, phase: 'loading', listen: true });
    await t.host.attach(engine);
  });
  after(async () => {
    TextTokenizer.prototype.encode = encode;
    await t?.close();
    await engine?.close();
  });

  test('30 MB of prompt is refused untokenized while /health keeps answering', async () => {
    const prompt = 'All work and no play makes Jack a dull boy. '.repeat(680_000); // ~30 MB, under BODY_LIMIT
    const body = JSON.stringify({ messages: [{ role: 'user', content: prompt }], max_tokens: 4 });
    assert.ok(body.length > 29_000_000 && body.length < 32 * 2 ** 20);

    let inFlight = true;
    const health: { ms: number; during: boolean }[] = [];
    const poll = (async () => {
      while (inFlight) {
        const start = performance.now();
        const res = await fetch(`${t.url}/health`);
        assert.equal(res.status, 200);
        await res.arrayBuffer();
        health.push({ ms: performance.now() - start, during: inFlight });
      }
    })();
    await sleep(20);
    const started = performance.now();
    const res = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const text = await res.text();
    const took = performance.now() - started;
    inFlight = false;
    await poll;

    assert.equal(res.status, 400, text);
    const error = (JSON.parse(text) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'context_length_exceeded');
    assert.match(error.message, /at least \d+ tokens .* context is 2048/);
    // Nothing of that size reached the tokenizer: only what may fit is ever tokenized.
    const tokenizer = await TextTokenizer.load(`${packageDir(PACKAGE)}/tokenizer.json`);
    assert.ok(longestEncoded <= 2048 * tokenizer.unitsPerToken, `the tokenizer was given ${longestEncoded} characters`);
    // The event loop was never held for the whole refusal.
    const during = health.filter((h) => h.during);
    assert.ok(during.length > 0, 'health was answered while the big request was in flight');
    const longest = Math.max(...during.map((h) => h.ms));
    assert.ok(longest < took, `the longest /health wait (${longest.toFixed(0)} ms) is shorter than the refusal (${took.toFixed(0)} ms)`);
    // and the server serves on
    const ok = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chatBody({ max_tokens: 2 })) });
    assert.equal(ok.status, 200);
  });

  test('tokenizing a large text lets the event loop run meanwhile', async () => {
    const tokenizer = await TextTokenizer.load(`${packageDir(PACKAGE)}/tokenizer.json`);
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40_000); // 1.8 MB
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const ids = await tokenizer.encode(text, false);
      assert.ok(ids.length > 100_000);
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks > 0, 'timers fired while the text was being tokenized');
  });
});

/** Opens a connection, sends `bytes` (if any), and resolves with what came back once the server closed it. */
function whatComesBack(url: string, bytes: string | null): Promise<{ text: string; closedByServer: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      if (bytes !== null) socket.write(bytes);
    });
    let text = '';
    let ended = false;
    socket.on('data', (d) => (text += d.toString('utf8')));
    socket.on('end', () => (ended = true));
    socket.on('close', () => resolve({ text, closedByServer: ended || text.length > 0 }));
    socket.on('error', reject);
  });
}

describe('connection timeouts', () => {
  let t: TestApp;
  before(async () => {
    t = await startApp({
      engine: new FakeEngine({ tokenDelayMs: 250 }),
      listen: true,
      config: { headersTimeoutSeconds: 0.5, bodyTimeoutSeconds: 1, keepAliveTimeoutSeconds: 0.5 },
    });
  });
  after(() => t.close());

  const timedOut = (text: string): void => {
    assert.match(text, /^HTTP\/1\.1 408 Request Timeout\r\n/, text);
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { error: { code: string; type: string } };
    assert.equal(body.error.code, 'request_timeout');
    assert.equal(body.error.type, 'invalid_request_error');
  };

  test('a connection that sends nothing gets 408 and is closed (HEADERS_TIMEOUT)', { timeout: 30_000 }, async () => {
    timedOut((await whatComesBack(t.url, null)).text);
  });

  test('headers that never end: 408, closed', { timeout: 30_000 }, async () => {
    timedOut((await whatComesBack(t.url, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n')).text);
  });

  test('a body that never ends: 408, closed (BODY_TIMEOUT)', { timeout: 30_000 }, async () => {
    const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"messages":';
    timedOut((await whatComesBack(t.url, head)).text);
  });

  test('an idle keep-alive connection is closed after its answer (KEEP_ALIVE_TIMEOUT)', { timeout: 30_000 }, async () => {
    const { text, closedByServer } = await whatComesBack(t.url, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(closedByServer);
  });

  test('a stream that takes longer than BODY_TIMEOUT is not cut: the timeouts are for receiving requests', async () => {
    const res = await fetch(`${t.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chatBody({ stream: true })),
    });
    const started = performance.now();
    const events = parseSse(await res.text());
    assert.ok(performance.now() - started > 1000, 'the stream outlived BODY_TIMEOUT');
    assert.equal((events.at(-1) as { choices: { finish_reason: string }[] }).choices[0].finish_reason, 'stop');
  });

  test('the 408s are counted', async () => {
    const text = (await t.app.inject('/metrics')).body;
    assert.match(text, /^tinyllava_request_errors_total\{model_name="[^"]*",type="invalid_request_error",code="request_timeout"\} 3$/m);
  });
});
