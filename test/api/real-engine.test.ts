// End to end on the real engine and the committed fixture package: the greedy answer to the
// golden case equals what HF transformers produced, and real image failures (not an image,
// truncated, SVG, too many pixels) and context overflows come back as 400s in the envelope.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { createEngine, type LoadedEngine } from '../../src/engine/engine.js';
import { loadGolden, packageDir } from '../support/golden.js';
import { assertError, assertMatches, dataUrl, imageBytes, imageMessage, parseSse, startApp, type TestApp } from './support/harness.js';

const PACKAGE = 'tiny-random-qwen2-siglip';

describe(`real engine on ${PACKAGE}`, () => {
  let engine: LoadedEngine;
  let t: TestApp;
  let client: OpenAI;

  before(async () => {
    engine = await createEngine(packageDir(PACKAGE), {
      warmup: false,
      intraOpNumThreads: 1,
      visionIntraOpNumThreads: 1,
      maxImagePixels: 500_000,
      maxImagesPerRequest: 2,
    });
    // The API allows more images than this engine, to see the engine's own refusal mapped.
    t = await startApp({ engine: null, phase: 'loading', listen: true, config: { maxImages: 3 } });
    await t.host.attach(engine);
    client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  after(async () => {
    await t?.close();
    await engine?.close();
  });

  test('the greedy answer to the golden case equals the reference tokens', async () => {
    const golden = loadGolden(PACKAGE).cases.find((c) => c.name === 'single-turn-photo')!;
    const content = golden.messages[0].content as ({ type: 'text'; text: string } | { type: 'image'; file: string })[];
    const completion = await client.chat.completions.create({
      model: PACKAGE,
      messages: [
        {
          role: 'user',
          content: content.map((p) =>
            p.type === 'text' ? { type: 'text' as const, text: p.text } : { type: 'image_url' as const, image_url: { url: dataUrl(p.file) } },
          ),
        },
      ],
      temperature: 0,
      max_tokens: 32,
      logprobs: true,
      // @ts-expect-error ignore_eos is this server's extension, unknown to the SDK's types
      ignore_eos: true,
    });
    assertMatches('ChatCompletion', completion);
    const choice = completion.choices[0];
    assert.equal(choice.finish_reason, 'length');
    assert.equal(choice.message.content, golden.greedy_text.replace(/^\s+/, ''));
    assert.equal(completion.usage!.prompt_tokens, golden.input_length);
    assert.equal(completion.usage!.completion_tokens, golden.greedy_ids.length);
    assert.equal((completion.usage!.prompt_tokens_details as { image_tokens: number }).image_tokens, 728);
    // token by token: one logprob entry per reference id, whose bytes spell the same text
    const tokens = choice.logprobs!.content!;
    assert.equal(tokens.length, golden.greedy_ids.length);
    assert.equal(Buffer.from(tokens.flatMap((x) => x.bytes!)).toString('utf8'), golden.greedy_text);
  });

  test('streamed, the same answer arrives in valid chunks', async () => {
    const res = await fetch(`${t.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [imageMessage(dataUrl('photo-640x480.jpg'), 'What are these?')],
        temperature: 0,
        max_tokens: 32,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    const events = parseSse(await res.text()) as Record<string, any>[];
    for (const e of events) assertMatches('ChatCompletionChunk', e);
    const text = events.map((e) => e.choices[0]?.delta.content ?? '').join('');
    assert.equal(text, loadGolden(PACKAGE).cases[0].greedy_text);
    assert.equal(events.at(-1)!.usage.completion_tokens, 32);
  });

  const post = (messages: unknown, extra: object = {}) =>
    t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages, max_tokens: 2, ...extra } });
  const good = async () => assert.equal((await post([imageMessage(dataUrl('small-100x80.png'))])).statusCode, 200);

  const photo = imageBytes('photo-640x480.jpg');
  const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>');
  const cases: [string, () => unknown, string, RegExp][] = [
    ['bytes that are not an image', () => [imageMessage(`data:image/png;base64,${Buffer.from('not an image at all').toString('base64')}`)], 'invalid_image', /format/],
    ['a truncated JPEG', () => [imageMessage(`data:image/jpeg;base64,${photo.subarray(0, photo.length / 2).toString('base64')}`)], 'invalid_image', /decode|corrupt|premature|truncat/i],
    ['SVG bytes sent as a PNG', () => [imageMessage(`data:image/png;base64,${svg.toString('base64')}`)], 'invalid_image', /svg/],
    ['an image over MAX_IMAGE_PIXELS', () => [imageMessage(dataUrl('wide-1024x768.jpg'))], 'invalid_image', /1024x768 = 786432 pixels, more than the limit of 500000/],
    ['more images than the engine takes', () => [{ role: 'user', content: Array.from({ length: 3 }, () => ({ type: 'image_url', image_url: { url: dataUrl('small-100x80.png') } })) }], 'too_many_images', /at most 2 images/],
    ['a prompt over the context', () => [{ role: 'user', content: 'the sea and the sky '.repeat(600) }], 'context_length_exceeded', /context/],
  ];
  for (const [name, messages, code, message] of cases) {
    test(`refused: ${name} -> 400 ${code}; the next request is served`, async () => {
      const error = assertError(await post(messages()), 400, code);
      assert.match(error.message, message);
      await good();
    });
  }

  test('refused: prompt + max_tokens over the context -> 400 naming max_tokens', async () => {
    const error = assertError(await post([imageMessage(dataUrl('small-100x80.png'))], { max_tokens: 2000 }), 400, 'context_length_exceeded', 'max_tokens');
    assert.match(error.message, /2048/);
  });

  test('the engine gauges come from its stats()', async () => {
    const text = (await t.app.inject('/metrics')).body;
    assert.match(text, /^tinyllava_num_requests_running 0$/m);
    assert.match(text, /^tinyllava_kv_cache_usage_perc 0$/m);
    assert.match(text, /^tinyllava_images_processed_total \d+$/m);
  });
});
