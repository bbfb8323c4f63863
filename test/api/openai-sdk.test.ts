// The contract test: the official `openai` npm client against a listening server, streaming and
// not, with image parts, API keys and errors as the SDK reports them.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { EngineError } from '../../src/engine/errors.js';
import { assertMatches, dataUrl, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

const imageContent = (question: string): OpenAI.Chat.ChatCompletionContentPart[] => [
  { type: 'image_url', image_url: { url: dataUrl('photo-640x480.jpg'), detail: 'auto' } },
  { type: 'text', text: question },
];

describe('the openai SDK', () => {
  let t: TestApp;
  let client: OpenAI;
  before(async () => {
    t = await startApp({ listen: true, config: { apiKeys: ['sk-right', 'sk-other'] } });
    client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'sk-right', maxRetries: 0 });
  });
  after(() => t.close());

  test('models.list names the served model', async () => {
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['fake-vlm'],
    );
  });

  test('models.retrieve finds it, and refuses another id with NotFoundError', async () => {
    const model = await client.models.retrieve('fake-vlm');
    assert.equal(model.id, 'fake-vlm');
    assert.equal(model.object, 'model');
    await assert.rejects(client.models.retrieve('gpt-4o'), OpenAI.NotFoundError);
  });

  test('a non-streamed completion with an image part', async () => {
    const completion = await client.chat.completions.create({
      model: 'fake-vlm',
      messages: [{ role: 'user', content: imageContent('What is in this picture?') }],
      max_completion_tokens: 64,
      temperature: 0,
      seed: 1,
    });
    assertMatches('ChatCompletion', completion);
    assert.equal(completion.choices[0].message.content, 'The answer is forty-two.');
    assert.equal(completion.choices[0].finish_reason, 'stop');
    assert.equal(completion.usage?.total_tokens, completion.usage!.prompt_tokens + completion.usage!.completion_tokens);
    assert.equal((completion.usage?.prompt_tokens_details as { image_tokens?: number }).image_tokens, 16);
  });

  test('a streamed completion with include_usage', async () => {
    const stream = await client.chat.completions.create({
      model: 'fake-vlm',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: imageContent('Describe it.') },
      ],
      stream: true,
      stream_options: { include_usage: true },
      stop: ['-'],
    });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined = null;
    for await (const chunk of stream) {
      assertMatches('ChatCompletionChunk', chunk);
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        finish = c.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'The answer is forty');
    assert.equal(finish, 'stop');
    assert.equal(usage?.completion_tokens, 4);
  });

  test('the stream helper assembles the same answer', async () => {
    const runner = client.chat.completions.stream({ model: 'fake-vlm', messages: [{ role: 'user', content: 'Hi' }] });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content, 'The answer is forty-two.');
  });

  test('logprobs come back in the SDK types', async () => {
    const completion = await client.chat.completions.create({
      model: 'fake-vlm',
      messages: [{ role: 'user', content: 'Hi' }],
      logprobs: true,
      top_logprobs: 3,
      max_tokens: 2,
    });
    const lp = completion.choices[0].logprobs?.content ?? [];
    assert.equal(lp.length, 2);
    assert.equal(lp[0].top_logprobs.length, 3);
  });

  test('a 400 arrives as BadRequestError with param and code', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'fake-vlm', messages: [{ role: 'user', content: 'Hi' }], temperature: 5 }),
      (err: unknown) => {
        assert.ok(err instanceof OpenAI.BadRequestError);
        assert.equal(err.status, 400);
        assert.equal(err.param, 'temperature');
        assert.equal(err.code, 'invalid_request');
        assert.match(err.message, /temperature: must be <= 2/);
        return true;
      },
    );
  });

  test('an unknown model is NotFoundError', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }] }), OpenAI.NotFoundError);
  });

  test('a wrong API key is AuthenticationError; the other configured key works', async () => {
    const wrong = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
    const other = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'sk-other', maxRetries: 0 });
    assert.equal((await other.models.list()).data.length, 1);
  });

  test('an error event mid-stream makes the SDK throw', async () => {
    const failing = await startApp({
      engine: new FakeEngine({ failAfter: { tokens: 1, error: new EngineError('model_error', 'decoder failed') } }),
      listen: true,
    });
    try {
      const c = new OpenAI({ baseURL: `${failing.url}/v1`, apiKey: 'none', maxRetries: 0 });
      const stream = await c.chat.completions.create({ model: 'fake-vlm', messages: [{ role: 'user', content: 'Hi' }], stream: true });
      let text = '';
      await assert.rejects(async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      }, OpenAI.APIError);
      assert.equal(text, 'The');
    } finally {
      await failing.close();
    }
  });
});
