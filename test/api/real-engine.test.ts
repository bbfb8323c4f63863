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
    assert.equal(choice.message.content, golden.answer_text);
    assert.equal(completion.usage!.prompt_tokens, golden.input_length);
    assert.equal(completion.usage!.completion_tokens, golden.greedy_ids.length);
    assert.deepEqual(completion.usage!.prompt_tokens_details, { image_tokens: 728, cached_tokens: 0 }); // the first request: nothing cached
    // token by token: one logprob entry per reference id, whose bytes spell the same text (before
    // the answer's strip, which the reference applies to the whole text)
    const tokens = choice.logprobs!.content!;
    assert.equal(tokens.length, golden.greedy_ids.length);
    assert.equal(Buffer.from(tokens.flatMap((x) => x.bytes!)).toString('utf8').trim(), golden.answer_text);
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
    assert.equal(text, loadGolden(PACKAGE).cases[0].answer_text);
    assert.equal(events.at(-1)!.usage.completion_tokens, 32);
    // the same prompt again: every full 16-position block before its last position came from the prefix cache
    const { prompt_tokens, prompt_tokens_details } = events.at(-1)!.usage;
    assert.equal(prompt_tokens_details.cached_tokens, Math.floor((prompt_tokens - 1) / 16) * 16);
  });

  const post = (messages: unknown, extra: object = {}) =>
    t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages, max_tokens: 2, ...extra } });
  const good = async () => assert.equal((await post([imageMessage(dataUrl('small-100x80.png'))])).statusCode, 200);

  const photo = imageBytes('photo-640x480.jpg');
  const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>');
  const first = 'messages[0].content[0].image_url.url';
  const cases: [string, () => unknown, string, RegExp, string?][] = [
    ['bytes that are not an image', () => [imageMessage(`data:image/png;base64,${Buffer.from('not an image at all').toString('base64')}`)], 'invalid_image', /format/, first],
    ['a truncated JPEG', () => [imageMessage(`data:image/jpeg;base64,${photo.subarray(0, photo.length / 2).toString('base64')}`)], 'invalid_image', /decode|corrupt|premature|truncat/i, first],
    ['SVG bytes sent as a PNG', () => [imageMessage(`data:image/png;base64,${svg.toString('base64')}`)], 'invalid_image', /svg/, first],
    ['an image over MAX_IMAGE_PIXELS', () => [imageMessage(dataUrl('wide-1024x768.jpg'))], 'invalid_image', /1024x768 = 786432 pixels, more than the limit of 500000/, first],
    [
      'a good image, then one that does not decode',
      () => [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'Compare.' }, { type: 'image_url', image_url: { url: dataUrl('small-100x80.png') } }, { type: 'image_url', image_url: { url: `data:image/png;base64,${Buffer.from('junk').toString('base64')}` } }] },
      ],
      'invalid_image',
      /format/,
      'messages[1].content[2].image_url.url',
    ],
    ['more images than the engine takes', () => [{ role: 'user', content: Array.from({ length: 3 }, () => ({ type: 'image_url', image_url: { url: dataUrl('small-100x80.png') } })) }], 'too_many_images', /at most 2 images/],
    ['a prompt over the context', () => [{ role: 'user', content: 'the sea and the sky '.repeat(600) }], 'context_length_exceeded', /context/],
    // 50,000 words, > 125k tokens: once a RangeError (a spread into push) and a 500.
    ['a prompt of 50,000 words', () => [{ role: 'user', content: 'word '.repeat(50_000) }], 'context_length_exceeded', /context/, 'messages'],
    // Quadratic once (a regex strip): 40,000 spaces took 2 s, these would take hours.
    ['an image with a question of a million spaces', () => [imageMessage(dataUrl('small-100x80.png'), `a${' '.repeat(1_000_000)}b`)], 'context_length_exceeded', /context/, 'messages'],
  ];
  for (const [name, messages, code, message, param] of cases) {
    test(`refused: ${name} -> 400 ${code}; the next request is served`, async () => {
      const error = assertError(await post(messages()), 400, code, param);
      assert.match(error.message, message);
      await good();
    });
  }

  test('refused: prompt + max_tokens over the context -> 400 naming max_tokens', async () => {
    const error = assertError(await post([imageMessage(dataUrl('small-100x80.png'))], { max_tokens: 2000 }), 400, 'context_length_exceeded', 'max_tokens');
    assert.match(error.message, /2048/);
  });

  test('multipart: an upload that does not decode is reported at its field', async () => {
    const bad = new Blob([Buffer.from('junk bytes')], { type: 'image/png' });
    const simple = new FormData();
    simple.append('prompt', 'Compare.');
    simple.append('image', new Blob([imageBytes('small-100x80.png')], { type: 'image/png' }), 'a.png');
    simple.append('image', bad, 'b.png');
    const res = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', body: simple });
    assertError({ statusCode: res.status, body: await res.text(), headers: {} }, 400, 'invalid_image', 'image[1]');

    const requestForm = new FormData();
    requestForm.append('request', JSON.stringify({ messages: [imageMessage('upload://photo')], max_tokens: 2 }));
    requestForm.append('photo', bad, 'photo.png');
    const res2 = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', body: requestForm });
    assertError({ statusCode: res2.status, body: await res2.text(), headers: {} }, 400, 'invalid_image', 'photo');
  });

  test('/tokenize counts a conversation with an image as the chat completion does', async () => {
    const messages = [imageMessage(dataUrl('photo-640x480.jpg'), 'What are these?')];
    const completion = (await post(messages, { max_tokens: 1 })).json() as { usage: { prompt_tokens: number } };
    const res = await t.app.inject({ method: 'POST', url: '/tokenize', payload: { messages, return_token_strs: true } });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json() as { count: number; max_model_len: number; tokens: number[]; token_strs: string[] };
    assertMatches('TokenizeResponse', body);
    assert.equal(body.count, completion.usage.prompt_tokens);
    assert.equal(body.tokens.length, body.count);
    assert.equal(body.tokens.filter((id) => id === -200).length, 728);
    assert.equal(body.token_strs.length, body.count);
    assert.equal(body.max_model_len, 2048);
    // without the generation prompt, fewer tokens
    const bare = (await t.app.inject({ method: 'POST', url: '/tokenize', payload: { messages, add_generation_prompt: false } })).json() as { count: number };
    assert.ok(bare.count < body.count);
  });

  test('/tokenize and /detokenize round-trip a text', async () => {
    const text = 'The sea and the sky, twice: the sea and the sky.';
    const tok = (await t.app.inject({ method: 'POST', url: '/tokenize', payload: { prompt: text, add_special_tokens: false } })).json() as { tokens: number[] };
    assert.ok(tok.tokens.length > 5);
    const detok = await t.app.inject({ method: 'POST', url: '/detokenize', payload: { tokens: tok.tokens } });
    assert.equal(detok.statusCode, 200, detok.body);
    assertMatches('DetokenizeResponse', detok.json());
    assert.equal(detok.json().prompt, text);
    assertError(await t.app.inject({ method: 'POST', url: '/detokenize', payload: { tokens: [1, 10_000_000] } }), 400, 'invalid_request', 'tokens[1]');
    assertError(await t.app.inject({ method: 'POST', url: '/tokenize', payload: { prompt: 'x '.repeat(100_000) } }), 400, 'context_length_exceeded', 'prompt');
  });

  test('the engine gauges come from its stats()', async () => {
    const text = (await t.app.inject('/metrics')).body;
    assert.match(text, new RegExp(`^tinyllava_num_requests_running{model_name="${PACKAGE}"} 0$`, 'm'));
    assert.match(text, new RegExp(`^tinyllava_kv_cache_usage_perc{model_name="${PACKAGE}"} 0$`, 'm'));
    assert.match(text, new RegExp(`^tinyllava_images_processed_total{model_name="${PACKAGE}"} \\d+$`, 'm'));
    const value = (name: string): number => Number(new RegExp(`^tinyllava_${name}{model_name="${PACKAGE}"} (\\S+)$`, 'm').exec(text)?.[1]);
    assert.ok(value('prefix_cache_hits_total') > 0 && value('prefix_cache_hits_total') < value('prefix_cache_queries_total'));
    assert.ok(value('prefix_cache_bytes') > 0);
  });
});
