// Streaming over a real socket: the exact bytes of the SSE framing, a failure after the 200
// (one error event, then [DONE]), and a client that disconnects mid-stream cancelling its
// generation.

import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { EngineError } from '../../src/engine/errors.js';
import { assertMatches, chatBody, parseSse, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

type Json = Record<string, any>;

/** POSTs JSON and resolves with the response as soon as its headers arrive. */
function open(url: string, body: unknown): Promise<{ res: IncomingMessage; destroy: () => void }> {
  return new Promise((resolve, reject) => {
    const u = new URL(`${url}/v1/chat/completions`);
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json' } });
    req.on('response', (res) => resolve({ res, destroy: () => req.destroy() }));
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}

describe('SSE over a socket', () => {
  let t: TestApp;
  let engine: FakeEngine;
  before(async () => {
    engine = new FakeEngine({ tokens: ['Hello', ',', ' wor', 'ld', '\n', 'é"\\'] });
    t = await startApp({ engine, listen: true });
  });
  after(() => t.close());

  test('the framing, byte for byte', async () => {
    const { res } = await open(t.url, chatBody({ stream: true, stream_options: { include_usage: true } }));
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.equal(res.headers['content-length'], undefined);
    const text = await readAll(res);
    const events = parseSse(text) as Json[];
    const id = events[0].id as string;
    const created = events[0].created as number;
    const head = { id, object: 'chat.completion.chunk', created, model: 'fake-vlm', system_fingerprint: null };
    const chunk = (delta: Json, finish: string | null = null) =>
      `data: ${JSON.stringify({ ...head, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], usage: null })}\n\n`;
    const expected =
      chunk({ role: 'assistant', content: '' }) +
      ['Hello', ',', ' wor', 'ld', '\n', 'é"\\'].map((c) => chunk({ content: c })).join('') +
      chunk({}, 'stop') +
      `data: ${JSON.stringify({ ...head, choices: [], usage: { prompt_tokens: 4, completion_tokens: 7, total_tokens: 11, prompt_tokens_details: { cached_tokens: 0, image_tokens: 0 } } })}\n\n` +
      'data: [DONE]\n\n';
    assert.equal(text, expected);
  });

  test('a failure after the response started: one error event, then [DONE]', async () => {
    const failing = new FakeEngine({ failAfter: { tokens: 2, error: new EngineError('model_error', 'the decoder session died') } });
    const t2 = await startApp({ engine: failing, listen: true });
    try {
      const { res } = await open(t2.url, chatBody({ stream: true }));
      assert.equal(res.statusCode, 200);
      const events = parseSse(await readAll(res)) as Json[];
      assert.equal(events.length, 4, JSON.stringify(events));
      for (const e of events) assertMatches('ChatCompletionStreamEvent', e);
      assert.equal(events[2].choices[0].delta.content, ' answer');
      const error = events[3] as { error: Json };
      assertMatches('ErrorResponse', error);
      assert.equal(error.error.code, 'model_error');
      assert.equal(error.error.type, 'server_error');
      // and the server goes on serving
      const next = await open(t2.url, chatBody({ max_tokens: 2 }));
      assert.equal(next.res.statusCode, 200);
      await readAll(next.res);
    } finally {
      await t2.close();
    }
  });

  test('an error before the first token is a plain HTTP error, not a 200 stream', async () => {
    const { res } = await open(t.url, chatBody({ stream: true, max_tokens: 10_000 }));
    assert.equal(res.statusCode, 400);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    assert.equal(JSON.parse(await readAll(res)).error.code, 'context_length_exceeded');
  });

  test('a client that disconnects mid-stream cancels its generation', async () => {
    const slow = new FakeEngine({ tokenDelayMs: 20 });
    const t2 = await startApp({ engine: slow, listen: true });
    try {
      const { res, destroy } = await open(t2.url, chatBody({ stream: true, ignore_eos: true, max_tokens: 200 }));
      assert.equal(res.statusCode, 200);
      await new Promise<void>((resolve) => res.once('data', () => resolve()));
      assert.equal(slow.running, 1);
      destroy();
      for (let i = 0; i < 100 && slow.running > 0; i++) await sleep(10);
      assert.equal(slow.running, 0, 'the generation stopped');
      assert.equal(slow.cancelled, 1, 'through the abort signal');
      assert.equal(t2.host.inFlightCount, 0);
      // Not counted as an error of the server's; counted as an aborted request.
      const metrics = await (await fetch(`${t2.url}/metrics`)).text();
      assert.match(metrics, /tinyllava_request_success_total\{model_name="fake-vlm",finished_reason="abort"\} 1/);
      assert.doesNotMatch(metrics, /tinyllava_request_errors_total\{/);
    } finally {
      await t2.close();
    }
  });

  test('a client that disconnects while waiting for a non-streamed answer cancels it too', async () => {
    const slow = new FakeEngine({ tokenDelayMs: 20 });
    const t2 = await startApp({ engine: slow, listen: true });
    try {
      const u = new URL(`${t2.url}/v1/chat/completions`);
      const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json' } });
      req.on('error', () => undefined);
      req.end(JSON.stringify(chatBody({ ignore_eos: true, max_tokens: 200 })));
      for (let i = 0; i < 100 && slow.running === 0; i++) await sleep(5);
      req.destroy();
      for (let i = 0; i < 100 && slow.running > 0; i++) await sleep(10);
      assert.equal(slow.running, 0);
      assert.equal(slow.cancelled, 1);
    } finally {
      await t2.close();
    }
  });
});
