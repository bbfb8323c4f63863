// POST /v1/chat/completions with JSON bodies, against the fake engine through inject():
// response shapes (validated against openapi.yaml), streaming order, and how wire parameters
// become the engine's GenerationRequest.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { assertMatches, chatBody, dataUrl, imageMessage, parseSse, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

type Json = Record<string, any>;

describe('chat completions (JSON)', () => {
  let t: TestApp;
  let engine: FakeEngine;
  before(async () => {
    engine = new FakeEngine();
    t = await startApp({ engine });
  });
  after(() => t.close());

  const post = (body: unknown) => t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: body as Json });

  test('non-streaming: the whole answer in the OpenAI shape, usage with image tokens', async () => {
    const res = await post({ model: 'fake-vlm', messages: [imageMessage(dataUrl('photo-640x480.jpg'))], max_tokens: 50 });
    assert.equal(res.statusCode, 200, res.body);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    const body = res.json() as Json;
    assertMatches('ChatCompletion', body);
    assert.equal(body.object, 'chat.completion');
    assert.equal(body.model, 'fake-vlm');
    assert.deepEqual(body.choices[0].message, { role: 'assistant', content: 'The answer is forty-two.', refusal: null });
    assert.equal(body.choices[0].finish_reason, 'stop');
    assert.equal(body.choices[0].logprobs, null);
    // 5 words + 16 image tokens + 2; 6 tokens + EOS
    assert.deepEqual(body.usage, {
      prompt_tokens: 23,
      completion_tokens: 7,
      total_tokens: 30,
      prompt_tokens_details: { cached_tokens: 0, image_tokens: 16 },
    });
  });

  test('the image reaches the engine as the decoded bytes of the data URL', async () => {
    await post({ messages: [imageMessage(dataUrl('photo-640x480.jpg'))] });
    const content = engine.requests.at(-1)!.messages[0].content as { type: string; data?: Uint8Array }[];
    assert.equal(content[0].type, 'image');
    assert.deepEqual(Buffer.from(content[0].data!), Buffer.from(dataUrl('photo-640x480.jpg').split(',')[1], 'base64'));
  });

  test('defaults are resolved before the engine sees the request', async () => {
    await post(chatBody());
    const r = engine.requests.at(-1)!;
    assert.deepEqual(r.sampling, {
      temperature: 1,
      topP: 1,
      topK: 0,
      minP: 0,
      repetitionPenalty: 1,
      presencePenalty: 0,
      frequencyPenalty: 0,
      seed: null,
    });
    assert.equal(r.maxTokens, null);
    assert.deepEqual(r.stop, []);
    assert.equal(r.ignoreEos, false);
    assert.equal(r.logprobs, null);
    assert.equal(r.deadlineMs, null);
  });

  test('every sampling parameter is passed on', async () => {
    const res = await post(
      chatBody({
        temperature: 0.5,
        top_p: 0.9,
        top_k: 40,
        min_p: 0.05,
        frequency_penalty: 0.5,
        presence_penalty: -0.5,
        repetition_penalty: 1.1,
        seed: 1234,
        max_completion_tokens: 3,
        stop: '###',
        ignore_eos: true,
        user: 'someone',
      }),
    );
    assert.equal(res.statusCode, 200, res.body);
    const r = engine.requests.at(-1)!;
    assert.deepEqual(r.sampling, {
      temperature: 0.5,
      topP: 0.9,
      topK: 40,
      minP: 0.05,
      repetitionPenalty: 1.1,
      presencePenalty: -0.5,
      frequencyPenalty: 0.5,
      seed: 1234,
    });
    assert.equal(r.maxTokens, 3);
    assert.deepEqual(r.stop, ['###']);
    assert.equal(r.ignoreEos, true);
    assert.equal((res.json() as Json).choices[0].finish_reason, 'length');
  });

  test('top_k -1 means off; developer is a system message', async () => {
    await post({ messages: [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], top_k: -1 });
    const r = engine.requests.at(-1)!;
    assert.equal(r.sampling.topK, 0);
    assert.equal(r.messages[0].role, 'system');
  });

  test('max_tokens ends with finish_reason length', async () => {
    const body = (await post(chatBody({ max_tokens: 2 }))).json() as Json;
    assert.equal(body.choices[0].message.content, 'The answer');
    assert.equal(body.choices[0].finish_reason, 'length');
    assert.equal(body.usage.completion_tokens, 2);
  });

  test('a stop string ends the answer and is not part of it', async () => {
    const body = (await post(chatBody({ stop: ['forty', 'nothing'] }))).json() as Json;
    assert.equal(body.choices[0].message.content, 'The answer is ');
    assert.equal(body.choices[0].finish_reason, 'stop');
  });

  test('logprobs with top_logprobs: one entry per token, alternatives included', async () => {
    const body = (await post(chatBody({ logprobs: true, top_logprobs: 2 }))).json() as Json;
    assertMatches('ChatCompletion', body);
    const content = body.choices[0].logprobs.content as Json[];
    assert.equal(content.length, 6);
    assert.equal(content[1].token, ' answer');
    assert.deepEqual(content[1].bytes, [...Buffer.from(' answer')]);
    assert.equal(content[1].top_logprobs.length, 2);
    assert.equal(engine.requests.at(-1)!.logprobs, 2);
  });

  test('logprobs without top_logprobs: empty alternatives', async () => {
    const body = (await post(chatBody({ logprobs: true }))).json() as Json;
    assert.deepEqual(body.choices[0].logprobs.content[0].top_logprobs, []);
    assert.equal(engine.requests.at(-1)!.logprobs, 0);
  });

  test('n > 1: independent choices with consecutive seeds, usage counts the prompt once', async () => {
    const res = await post(chatBody({ n: 3, seed: 7, temperature: 0.8 }));
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json() as Json;
    assertMatches('ChatCompletion', body);
    assert.deepEqual(
      body.choices.map((c: Json) => c.index),
      [0, 1, 2],
    );
    assert.deepEqual(
      engine.requests.slice(-3).map((r) => r.sampling.seed),
      [7, 8, 9],
    );
    assert.equal(body.usage.completion_tokens, 21);
    assert.equal(body.usage.prompt_tokens, 4);
  });

  test('streaming: role first, content deltas, finish, then [DONE]', async () => {
    const res = await post(chatBody({ stream: true }));
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
    const events = parseSse(res.body) as Json[];
    for (const e of events) assertMatches('ChatCompletionChunk', e);
    assert.deepEqual(events[0].choices[0].delta, { role: 'assistant', content: '' });
    assert.deepEqual(
      events.slice(1, -1).map((e) => e.choices[0].delta.content),
      DEFAULT_TEXT,
    );
    const last = events.at(-1)!;
    assert.deepEqual(last.choices[0], { index: 0, delta: {}, logprobs: null, finish_reason: 'stop' });
    assert.ok(events.every((e) => !('usage' in e)), 'no usage field without include_usage');
    assert.equal(new Set(events.map((e) => e.id)).size, 1, 'one id for the whole stream');
  });

  test('streaming with include_usage: usage null on every chunk, then a usage chunk with no choices', async () => {
    const res = await post(chatBody({ stream: true, stream_options: { include_usage: true }, max_tokens: 3 }));
    const events = parseSse(res.body) as Json[];
    for (const e of events) assertMatches('ChatCompletionChunk', e);
    const usage = events.at(-1)!;
    assert.deepEqual(usage.choices, []);
    assert.deepEqual(usage.usage, { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7, prompt_tokens_details: { cached_tokens: 0, image_tokens: 0 } });
    assert.ok(events.slice(0, -1).every((e) => e.usage === null));
    assert.equal(events.at(-2)!.choices[0].finish_reason, 'length');
  });

  test('streaming n > 1: every choice has its role chunk, its content and its finish', async () => {
    const events = parseSse((await post(chatBody({ stream: true, n: 2 }))).body) as Json[];
    for (const index of [0, 1]) {
      const mine = events.filter((e) => e.choices[0]?.index === index);
      assert.equal(mine[0].choices[0].delta.role, 'assistant');
      assert.equal(mine.map((e) => e.choices[0].delta.content ?? '').join(''), 'The answer is forty-two.');
      assert.equal(mine.at(-1)!.choices[0].finish_reason, 'stop');
    }
  });

  test('streaming logprobs ride on the content chunks', async () => {
    const events = parseSse((await post(chatBody({ stream: true, logprobs: true, top_logprobs: 1 }))).body) as Json[];
    for (const e of events) assertMatches('ChatCompletionChunk', e);
    assert.equal(events[1].choices[0].logprobs.content[0].token, 'The');
  });
});

describe('request timeout', () => {
  test('REQUEST_TIMEOUT becomes the engine request deadline', async () => {
    const engine = new FakeEngine();
    const t = await startApp({ engine, config: { requestTimeoutSeconds: 5 } });
    try {
      const before = Date.now();
      await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() });
      const deadline = engine.requests[0].deadlineMs!;
      assert.ok(deadline >= before + 5000 && deadline <= Date.now() + 5000, String(deadline - before));
    } finally {
      await t.close();
    }
  });
});

const DEFAULT_TEXT = ['The', ' answer', ' is', ' forty', '-two', '.'];
