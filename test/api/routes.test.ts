// The routes clients reach for beyond chat completions: GET /v1/models/{model}, vLLM's
// /tokenize and /detokenize (shapes, defaults, refusals, API keys), and CORS for browser
// front-ends (off by default; preflight answered; errors readable cross-origin).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertError, assertMatches, dataUrl, imageMessage, startApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

type Json = Record<string, any>;

describe('GET /v1/models/{model}', () => {
  test('the served model by id; another id is a 404 model_not_found', async () => {
    const t = await startApp({ engine: new FakeEngine({ model: { id: 'org/tiny-vlm' } }) });
    try {
      const res = await t.app.inject('/v1/models/org%2Ftiny-vlm');
      assert.equal(res.statusCode, 200, res.body);
      assertMatches('Model', res.json());
      assert.equal(res.json().id, 'org/tiny-vlm');
      assert.deepEqual(res.json(), (await t.app.inject('/v1/models')).json().data[0]);
      assertError(await t.app.inject('/v1/models/gpt-4o'), 404, 'model_not_found', 'model');
    } finally {
      await t.close();
    }
  });
});

describe('/tokenize and /detokenize', () => {
  const post = (t: Awaited<ReturnType<typeof startApp>>, url: string, payload: unknown, headers = {}) =>
    t.app.inject({ method: 'POST', url, payload: payload as object, headers });

  test('a prompt, a conversation with an image, and back', async () => {
    const t = await startApp();
    try {
      const text = (await post(t, '/tokenize', { prompt: 'hello big world' })).json() as Json;
      assertMatches('TokenizeResponse', text);
      assert.deepEqual(text.token_strs, null);
      assert.equal(text.count, 5); // BOS, 3 words, EOS in the fake's vocabulary
      assert.equal(text.max_model_len, 256);

      const chat = await post(t, '/tokenize', { messages: [imageMessage(dataUrl('small-100x80.png'), 'what is it')], return_token_strs: true });
      assert.equal(chat.statusCode, 200, chat.body);
      const body = chat.json() as Json;
      assertMatches('TokenizeResponse', body);
      assert.equal(body.tokens.filter((id: number) => id === -200).length, 16, 'the image counts as its 16 positions');
      assert.equal(body.count, 2 + 3 + 16);
      assert.equal(body.token_strs.length, body.count);

      const back = await post(t, '/detokenize', { tokens: text.tokens });
      assertMatches('DetokenizeResponse', back.json());
      assert.equal(back.json().prompt, '<s> hello big world </s>');
    } finally {
      await t.close();
    }
  });

  test('refusals: wrong shapes, another model, images where they cannot be, ids outside the vocabulary, too long', async () => {
    const t = await startApp();
    try {
      assertError(await post(t, '/tokenize', {}), 400, 'invalid_request');
      assertError(await post(t, '/tokenize', { prompt: 'x', messages: [] }), 400, 'invalid_request');
      assertError(await post(t, '/tokenize', { prompt: 'x', add_generation_prompt: true }), 400, 'invalid_request');
      assertError(await post(t, '/tokenize', { prompt: 'x', model: 'other' }), 404, 'model_not_found', 'model');
      const assistantImage = { messages: [{ role: 'assistant', content: [{ type: 'image_url', image_url: { url: dataUrl('small-100x80.png') } }] }] };
      assertError(await post(t, '/tokenize', assistantImage), 400, 'invalid_request', 'messages[0].content[0]');
      assertError(await post(t, '/tokenize', { messages: [imageMessage('https://example.com/cat.jpg')] }), 400, 'image_url_not_allowed');
      assertError(await post(t, '/tokenize', { prompt: 'word '.repeat(300) }), 400, 'context_length_exceeded', 'prompt');
      assertError(await post(t, '/detokenize', { tokens: [0, 999_999] }), 400, 'invalid_request', 'tokens[1]');
      assertError(await post(t, '/detokenize', { tokens: [-1] }), 400, 'invalid_request', 'tokens[0]');
      assertError(await post(t, '/detokenize', { tokens: 'abc' }), 400, 'invalid_request', 'tokens');
    } finally {
      await t.close();
    }
  });

  test('with API keys they need one, like /v1/*; they answer while the model loads', async () => {
    const t = await startApp({ config: { apiKeys: ['k1'] } });
    try {
      assertError(await post(t, '/tokenize', { prompt: 'x' }), 401, 'invalid_api_key');
      assertError(await post(t, '/detokenize', { tokens: [0] }), 401, 'invalid_api_key');
      assert.equal((await post(t, '/tokenize', { prompt: 'x' }, { authorization: 'Bearer k1' })).statusCode, 200);
    } finally {
      await t.close();
    }
    const loading = await startApp({ engine: new FakeEngine(), phase: 'loading' });
    try {
      assert.equal((await post(loading, '/tokenize', { prompt: 'x' })).statusCode, 200);
    } finally {
      await loading.close();
    }
    const none = await startApp({ engine: null, phase: 'loading' });
    try {
      assertError(await post(none, '/tokenize', { prompt: 'x' }), 503, 'model_not_ready');
    } finally {
      await none.close();
    }
  });
});

describe('CORS', () => {
  const preflight = (origin: string, url = '/v1/chat/completions') => ({
    method: 'OPTIONS' as const,
    url,
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, x-stainless-os' },
  });

  test('off by default: no CORS headers, OPTIONS is a 405', async () => {
    const t = await startApp();
    try {
      const res = await t.app.inject({ url: '/v1/models', headers: { origin: 'https://app.example.com' } });
      assert.equal(res.headers['access-control-allow-origin'], undefined);
      const pre = await t.app.inject(preflight('https://app.example.com'));
      assertError(pre, 405, 'method_not_allowed');
      assert.equal(pre.headers['access-control-allow-origin'], undefined);
    } finally {
      await t.close();
    }
  });

  test('--allowed-origins: preflight answered before any key check, responses and errors readable', async () => {
    const t = await startApp({ config: { allowedOrigins: ['https://app.example.com'], apiKeys: ['k1'] } });
    try {
      const pre = await t.app.inject(preflight('https://app.example.com'));
      assert.equal(pre.statusCode, 204, pre.body);
      assert.equal(pre.headers['access-control-allow-origin'], 'https://app.example.com');
      assert.match(String(pre.headers['access-control-allow-methods']), /POST/);
      assert.match(String(pre.headers['access-control-allow-headers']), /authorization/i);
      assert.match(String(pre.headers['access-control-allow-headers']), /x-stainless-os/i);
      assert.equal(pre.headers['access-control-max-age'], '600');

      const ok = await t.app.inject({ url: '/v1/models', headers: { origin: 'https://app.example.com', authorization: 'Bearer k1' } });
      assert.equal(ok.statusCode, 200);
      assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example.com');
      assert.match(String(ok.headers['access-control-expose-headers']), /x-request-id/);
      // a 401 a page can read
      const denied = await t.app.inject({ url: '/v1/models', headers: { origin: 'https://app.example.com' } });
      assertError(denied, 401, 'invalid_api_key');
      assert.equal(denied.headers['access-control-allow-origin'], 'https://app.example.com');
      // a stream too
      const stream = await t.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: { origin: 'https://app.example.com', authorization: 'Bearer k1' },
        payload: { messages: [{ role: 'user', content: 'hi' }], stream: true },
      });
      assert.equal(stream.statusCode, 200);
      assert.equal(stream.headers['access-control-allow-origin'], 'https://app.example.com');

      // another origin gets no permission
      const other = await t.app.inject(preflight('https://evil.example.net'));
      assert.equal(other.headers['access-control-allow-origin'], undefined);
      const otherGet = await t.app.inject({ url: '/health', headers: { origin: 'https://evil.example.net' } });
      assert.equal(otherGet.headers['access-control-allow-origin'], undefined);
    } finally {
      await t.close();
    }
  });

  test('* allows any origin', async () => {
    const t = await startApp({ config: { allowedOrigins: ['*'] } });
    try {
      assert.equal((await t.app.inject(preflight('https://anything.example'))).headers['access-control-allow-origin'], '*');
      assert.equal((await t.app.inject({ url: '/health', headers: { origin: 'https://x.example' } })).headers['access-control-allow-origin'], '*');
    } finally {
      await t.close();
    }
  });
});
