// Every kind of bad request gets the OpenAI error envelope with the right status, code and
// param, before any generation starts; and after each one the server still answers a good
// request. (Image decoding failures of real images are in real-engine.test.ts.)

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { EngineError } from '../../src/engine/errors.js';
import { assertError, assertMatches, chatBody, dataUrl, imageMessage, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

const user = (content: unknown) => ({ messages: [{ role: 'user', content }] });
const png = (base64: string) => `data:image/png;base64,${base64}`;

interface Case {
  name: string;
  body: unknown;
  status: number;
  code: string;
  param?: string | null;
  /** Raw payload and content type instead of JSON. */
  raw?: { payload: string | Buffer; type: string };
}

const CASES: Case[] = [
  { name: 'malformed JSON', body: null, raw: { payload: '{"messages": [', type: 'application/json' }, status: 400, code: 'invalid_json' },
  { name: 'an empty JSON body', body: null, raw: { payload: '', type: 'application/json' }, status: 400, code: 'invalid_json' },
  { name: 'a body that is not JSON or a form', body: null, raw: { payload: 'hello', type: 'text/plain' }, status: 415, code: 'unsupported_media_type' },
  { name: 'a JSON array instead of an object', body: [1, 2], status: 400, code: 'invalid_request', param: null },
  { name: 'missing messages', body: { max_tokens: 5 }, status: 400, code: 'invalid_request', param: 'messages' },
  { name: 'empty messages', body: { messages: [] }, status: 400, code: 'invalid_request', param: 'messages' },
  { name: 'messages of the wrong type', body: { messages: 'hello' }, status: 400, code: 'invalid_request', param: 'messages' },
  { name: 'an unknown role', body: { messages: [{ role: 'tool', content: 'x' }] }, status: 400, code: 'invalid_request', param: 'messages[0].role' },
  { name: 'a message without content', body: { messages: [{ role: 'user' }] }, status: 400, code: 'invalid_request', param: 'messages[0].content' },
  { name: 'an empty content array', body: user([]), status: 400, code: 'invalid_request', param: 'messages[0].content' },
  { name: 'content of the wrong type', body: user(42), status: 400, code: 'invalid_request', param: 'messages[0].content' },
  { name: 'an unknown part type', body: user([{ type: 'audio' }]), status: 400, code: 'invalid_request', param: 'messages[0].content[0].type' },
  { name: 'a text part without text', body: user([{ type: 'text' }]), status: 400, code: 'invalid_request', param: 'messages[0].content[0].text' },
  { name: 'an unknown field', body: chatBody({ max_token: 5 }), status: 400, code: 'invalid_request', param: 'max_token' },
  { name: 'a string temperature', body: chatBody({ temperature: 'hot' }), status: 400, code: 'invalid_request', param: 'temperature' },
  { name: 'a fractional max_tokens', body: chatBody({ max_tokens: 1.5 }), status: 400, code: 'invalid_request', param: 'max_tokens' },
  { name: 'stream as a string', body: chatBody({ stream: 'yes' }), status: 400, code: 'invalid_request', param: 'stream' },
  { name: 'stop of the wrong type', body: chatBody({ stop: 3 }), status: 400, code: 'invalid_request', param: 'stop' },
  { name: 'an empty stop string', body: chatBody({ stop: [''] }), status: 400, code: 'invalid_request', param: 'stop[0]' },
  // out-of-range sampling values
  { name: 'temperature > 2', body: chatBody({ temperature: 2.5 }), status: 400, code: 'invalid_request', param: 'temperature' },
  { name: 'temperature < 0', body: chatBody({ temperature: -0.1 }), status: 400, code: 'invalid_request', param: 'temperature' },
  { name: 'top_p 0', body: chatBody({ top_p: 0 }), status: 400, code: 'invalid_request', param: 'top_p' },
  { name: 'top_p > 1', body: chatBody({ top_p: 1.01 }), status: 400, code: 'invalid_request', param: 'top_p' },
  { name: 'top_k < -1', body: chatBody({ top_k: -2 }), status: 400, code: 'invalid_request', param: 'top_k' },
  { name: 'min_p > 1', body: chatBody({ min_p: 1.5 }), status: 400, code: 'invalid_request', param: 'min_p' },
  { name: 'presence_penalty > 2', body: chatBody({ presence_penalty: 2.5 }), status: 400, code: 'invalid_request', param: 'presence_penalty' },
  { name: 'frequency_penalty < -2', body: chatBody({ frequency_penalty: -3 }), status: 400, code: 'invalid_request', param: 'frequency_penalty' },
  { name: 'repetition_penalty 0', body: chatBody({ repetition_penalty: 0 }), status: 400, code: 'invalid_request', param: 'repetition_penalty' },
  { name: 'max_tokens 0', body: chatBody({ max_tokens: 0 }), status: 400, code: 'invalid_request', param: 'max_tokens' },
  { name: 'n 0', body: chatBody({ n: 0 }), status: 400, code: 'invalid_request', param: 'n' },
  { name: 'n over 8', body: chatBody({ n: 9 }), status: 400, code: 'invalid_request', param: 'n' },
  { name: 'top_logprobs over 20', body: chatBody({ logprobs: true, top_logprobs: 21 }), status: 400, code: 'invalid_request', param: 'top_logprobs' },
  { name: 'a fractional seed', body: chatBody({ seed: 1.5 }), status: 400, code: 'invalid_request', param: 'seed' },
  // combinations
  { name: 'top_logprobs without logprobs', body: chatBody({ top_logprobs: 2 }), status: 400, code: 'invalid_request', param: 'top_logprobs' },
  { name: 'stream_options without stream', body: chatBody({ stream_options: { include_usage: true } }), status: 400, code: 'invalid_request', param: 'stream_options' },
  { name: 'max_tokens and max_completion_tokens disagree', body: chatBody({ max_tokens: 5, max_completion_tokens: 6 }), status: 400, code: 'invalid_request', param: 'max_completion_tokens' },
  // structured outputs (what the grammar engine refuses is in structured.test.ts)
  { name: 'an unknown response format', body: chatBody({ response_format: { type: 'xml' } }), status: 400, code: 'invalid_request', param: 'response_format.type' },
  { name: 'json_schema without a name', body: chatBody({ response_format: { type: 'json_schema', json_schema: { schema: {} } } }), status: 400, code: 'invalid_request', param: 'response_format.json_schema.name' },
  { name: 'a json_schema name with spaces', body: chatBody({ response_format: { type: 'json_schema', json_schema: { name: 'my schema' } } }), status: 400, code: 'invalid_request', param: 'response_format.json_schema.name' },
  { name: 'a schema that is not an object', body: chatBody({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: 'string' } } }), status: 400, code: 'invalid_request', param: 'response_format.json_schema.schema' },
  { name: 'guided_json of the wrong type', body: chatBody({ guided_json: 5 }), status: 400, code: 'invalid_request', param: 'guided_json' },
  { name: 'guided_json text that is not JSON', body: chatBody({ guided_json: '{"type": ' }), status: 400, code: 'invalid_request', param: 'guided_json' },
  { name: 'an empty guided_choice', body: chatBody({ guided_choice: [] }), status: 400, code: 'invalid_request', param: 'guided_choice' },
  { name: 'an empty guided_regex', body: chatBody({ guided_regex: '' }), status: 400, code: 'invalid_request', param: 'guided_regex' },
  { name: 'two constraints at once', body: chatBody({ guided_json: {}, guided_choice: ['a'] }), status: 400, code: 'invalid_request', param: 'guided_choice' },
  { name: 'another model', body: chatBody({ model: 'gpt-4o' }), status: 404, code: 'model_not_found', param: 'model' },
  // images
  { name: 'invalid base64', body: user([{ type: 'image_url', image_url: { url: png('iVBORw0K$$$GgoAAAA') } }]), status: 400, code: 'invalid_image_url', param: 'messages[0].content[0].image_url.url' },
  { name: 'base64 of the wrong length', body: user([{ type: 'image_url', image_url: { url: png('iVBORw0KG') } }]), status: 400, code: 'invalid_image_url' },
  { name: 'a data URL that is not base64', body: user([{ type: 'image_url', image_url: { url: 'data:image/png,abc' } }]), status: 400, code: 'invalid_image_url' },
  { name: 'a data URL whose media type is not an image', body: user([{ type: 'image_url', image_url: { url: 'data:text/plain;base64,aGVsbG8=' } }]), status: 400, code: 'invalid_image_url' },
  { name: 'an empty image', body: user([{ type: 'image_url', image_url: { url: 'data:image/png;base64,' } }]), status: 400, code: 'invalid_image' },
  { name: 'bytes that are not an image', body: user([{ type: 'image_url', image_url: { url: png(Buffer.from('hello world').toString('base64')) } }]), status: 400, code: 'invalid_image' },
  { name: 'an SVG data URL', body: user([{ type: 'image_url', image_url: { url: `data:image/svg+xml;base64,${Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>').toString('base64')}` } }]), status: 400, code: 'invalid_image' },
  { name: 'an http image URL (remote images are off by default)', body: user([{ type: 'image_url', image_url: { url: 'http://example.com/cat.jpg' } }]), status: 400, code: 'image_url_not_allowed', param: 'messages[0].content[0].image_url.url' },
  { name: 'an https image URL (remote images are off by default)', body: user([{ type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } }]), status: 400, code: 'image_url_not_allowed' },
  { name: 'a file URL', body: user([{ type: 'image_url', image_url: { url: 'file:///etc/passwd' } }]), status: 400, code: 'invalid_image_url' },
  { name: 'an upload:// URL in a JSON request', body: user([{ type: 'image_url', image_url: { url: 'upload://image' } }]), status: 400, code: 'invalid_image_url' },
  { name: 'an image in an assistant message', body: { messages: [{ role: 'assistant', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] }, { role: 'user', content: 'x' }] }, status: 400, code: 'invalid_request', param: 'messages[0].content[0]' },
  { name: 'too many images', body: { messages: [{ role: 'user', content: Array.from({ length: 5 }, () => ({ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } })) }] }, status: 400, code: 'too_many_images', param: 'messages[0].content[4]' },
  // the model's context
  { name: 'a prompt over the context', body: user('word '.repeat(300)), status: 400, code: 'context_length_exceeded', param: 'messages' },
  { name: 'a prompt plus max_tokens over the context', body: { ...user('short question'), max_tokens: 255 }, status: 400, code: 'context_length_exceeded', param: 'max_tokens' },
];

describe('bad requests', () => {
  let t: TestApp;
  before(async () => {
    t = await startApp({ engine: new FakeEngine() });
  });
  after(() => t.close());

  const good = async (): Promise<void> => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [imageMessage(dataUrl('small-100x80.png'))] } });
    assert.equal(res.statusCode, 200, `the server must still serve: ${res.body}`);
  };

  for (const c of CASES) {
    test(`${c.name} -> ${c.status} ${c.code}`, async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        ...(c.raw ? { payload: c.raw.payload, headers: { 'content-type': c.raw.type } } : { payload: c.body as object }),
      });
      const error = assertError(res, c.status, c.code, c.param);
      assert.ok(error.message.length > 0);
      assert.ok(error.message.length < 400, 'messages quote values briefly, never a whole image');
      await good();
    });
  }

  test('messages name the field, the limit and the value', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody({ temperature: 2.5 }) });
    assert.equal(JSON.parse(res.body).error.message, 'temperature: must be <= 2; got 2.5');
  });

  test('wrong types are refused, never coerced: "5" is not a number', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody({ max_tokens: '5' }) });
    assertError(res, 400, 'invalid_request', 'max_tokens');
  });
});

describe('body limit', () => {
  test('a body over BODY_LIMIT is a 413 before it is parsed; the next request is served', async () => {
    const t = await startApp({ config: { bodyLimitBytes: 64 * 1024, maxUploadBytes: 32 * 1024 } });
    try {
      const big = { messages: [imageMessage(`data:image/png;base64,${'A'.repeat(100 * 1024)}`)] };
      assertError(await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: big }), 413, 'body_too_large');
      const ok = await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() });
      assert.equal(ok.statusCode, 200);
    } finally {
      await t.close();
    }
  });

  test('the default limit (32 MiB) takes a few base64 photos', async () => {
    const t = await startApp();
    try {
      const url = dataUrl('wide-1024x768.jpg');
      const body = { messages: [{ role: 'user', content: [...Array.from({ length: 4 }, () => ({ type: 'image_url', image_url: { url } })), { type: 'text', text: 'Compare.' }] }] };
      const res = await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: body });
      assert.equal(res.statusCode, 200, res.body);
    } finally {
      await t.close();
    }
  });
});

describe('engine failures', () => {
  const run = async (engine: FakeEngine, config = {}) => {
    const t = await startApp({ engine, config });
    try {
      return await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() });
    } finally {
      await t.close();
    }
  };

  test('overloaded -> 429 with Retry-After', async () => {
    const res = await run(new FakeEngine({ failBeforeStart: new EngineError('overloaded', 'too many requests waiting (64); retry later') }), {
      retryAfterSeconds: 3,
    });
    assertError(res, 429, 'overloaded');
    assert.equal(res.headers['retry-after'], '3');
    assert.equal(JSON.parse(res.body).error.type, 'rate_limit_error');
  });

  test('shutting down -> 503 with Retry-After', async () => {
    assertError(await run(new FakeEngine({ failBeforeStart: new EngineError('shutting_down', 'the engine is shutting down') })), 503, 'shutting_down');
  });

  test('a deadline that passed before the start -> 503', async () => {
    assertError(await run(new FakeEngine({ failBeforeStart: new EngineError('deadline_exceeded', 'deadline passed') })), 503, 'deadline_exceeded');
  });

  test('an internal failure -> 500 whose message names the request id, not the internals', async () => {
    const res = await run(new FakeEngine({ failBeforeStart: new EngineError('internal', 'tensor shape [1,2] vs [3] at /secret/path') }));
    const error = assertError(res, 500, 'internal_error');
    assert.equal(error.type, 'server_error');
    assert.doesNotMatch(error.message, /secret/);
    assert.match(error.message, new RegExp(String(res.headers['x-request-id'])));
  });

  test('a model failure -> 500', async () => {
    assertError(await run(new FakeEngine({ failBeforeStart: new EngineError('model_error', 'session died') })), 500, 'model_error');
  });

  test('a non-EngineError thrown below -> 500', async () => {
    const engine = new FakeEngine();
    engine.generate = () => {
      throw new TypeError('bug');
    };
    assertMatches('ErrorResponse', JSON.parse((await run(engine)).body));
  });
});
