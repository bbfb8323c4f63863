// Structured outputs through HTTP on the real engine and a fixture package: response_format
// json_schema / json_object and vLLM's guided_* fields, in JSON and multipart requests,
// streamed or not, with n > 1; the openai SDK's chat.completions.parse end to end (a zod
// schema and a plain JSON schema); and the 400s: unsupported keywords, two constraints at once.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { createEngine, type LoadedEngine } from '../../src/engine/engine.js';
import { packageDir } from '../support/golden.js';
import { assertError, assertMatches, dataUrl, imageBytes, imageMessage, parseSse, startApp, type TestApp } from './support/harness.js';

const PACKAGE = 'tiny-random-qwen2-siglip';
type Json = Record<string, any>;

const RECEIPT = {
  type: 'object',
  properties: {
    shop: { type: 'string', maxLength: 10 },
    total: { type: 'integer', minimum: 0, maximum: 500 },
    paid: { type: 'boolean' },
    items: { type: 'array', maxItems: 2, items: { type: 'object', properties: { what: { enum: ['tea', 'cake'] }, n: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['what', 'n'], additionalProperties: false } },
  },
  required: ['shop', 'total', 'paid', 'items'],
  additionalProperties: false,
};

const ajv = new Ajv({ strict: false });
const validReceipt = ajv.compile(RECEIPT);

function assertReceipt(text: string): void {
  const value = JSON.parse(text);
  assert.ok(validReceipt(value), `${text}: ${ajv.errorsText(validReceipt.errors)}`);
}

describe(`structured outputs over HTTP (${PACKAGE})`, () => {
  let engine: LoadedEngine;
  let t: TestApp;
  let client: OpenAI;

  before(async () => {
    engine = await createEngine(packageDir(PACKAGE), { warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1, maxImagePixels: 500_000 });
    t = await startApp({ engine: null, phase: 'loading', listen: true });
    await t.host.attach(engine);
    client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  after(async () => {
    await t?.close();
    await engine?.close();
  });

  const post = async (body: unknown) => {
    const res = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { statusCode: res.status, body: await res.text(), headers: Object.fromEntries(res.headers) };
  };
  const postForm = async (f: FormData) => {
    const res = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', body: f });
    return { statusCode: res.status, body: await res.text(), headers: Object.fromEntries(res.headers) };
  };
  const jsonSchema = { type: 'json_schema', json_schema: { name: 'receipt', schema: RECEIPT, strict: true } };

  test('response_format json_schema, with an image, n = 3 sampled choices', async () => {
    const res = await post({
      messages: [imageMessage(dataUrl('photo-640x480.jpg'), 'Read the receipt.')],
      response_format: jsonSchema,
      n: 3,
      temperature: 1,
      seed: 7,
      max_tokens: 200,
    });
    assert.equal(res.statusCode, 200, res.body);
    const body = JSON.parse(res.body) as Json;
    assertMatches('ChatCompletion', body);
    assert.equal(body.choices.length, 3);
    for (const c of body.choices) {
      assert.equal(c.finish_reason, 'stop');
      assertReceipt(c.message.content);
    }
  });

  test('streamed: the deltas add up to a valid answer', async () => {
    const res = await post({ messages: [{ role: 'user', content: 'Receipt?' }], response_format: jsonSchema, stream: true, temperature: 0, max_tokens: 200, n: 2 });
    assert.equal(res.statusCode, 200, res.body);
    const texts = ['', ''];
    const finish: (string | null)[] = [null, null];
    for (const chunk of parseSse(res.body) as Json[]) {
      assertMatches('ChatCompletionChunk', chunk);
      for (const c of chunk.choices) {
        texts[c.index] += c.delta.content ?? '';
        finish[c.index] = c.finish_reason ?? finish[c.index];
      }
    }
    assert.deepEqual(finish, ['stop', 'stop']);
    texts.forEach(assertReceipt);
  });

  test('json_object, guided_json (object and text), guided_regex, guided_choice, guided_grammar', async () => {
    const ask = (extra: Json) => post({ messages: [{ role: 'user', content: 'Answer.' }], temperature: 0, max_tokens: 120, ...extra });
    const cut = JSON.parse((await ask({ response_format: { type: 'json_object' }, max_tokens: 4 })).body) as Json;
    assert.equal(cut.choices[0].finish_reason, 'length');
    assert.ok(cut.choices[0].message.content.startsWith('{'));
    for (const guided of [RECEIPT, JSON.stringify(RECEIPT)]) {
      const r = JSON.parse((await ask({ guided_json: guided })).body) as Json;
      assertReceipt(r.choices[0].message.content);
    }
    const regex = JSON.parse((await ask({ guided_regex: '[0-9]{3}-[a-z]{2,4}' })).body) as Json;
    assert.match(regex.choices[0].message.content, /^[0-9]{3}-[a-z]{2,4}$/);
    const choice = JSON.parse((await ask({ guided_choice: ['cat', 'dog', 'bird'] })).body) as Json;
    assert.ok(['cat', 'dog', 'bird'].includes(choice.choices[0].message.content));
    const grammar = JSON.parse((await ask({ guided_grammar: 'start: word (" " word){2}\nword: /[a-z]{1,5}/\n' })).body) as Json;
    assert.match(grammar.choices[0].message.content, /^[a-z]{1,5} [a-z]{1,5} [a-z]{1,5}$/);
  });

  test('multipart: response_format as a JSON text field of the simple form, guided_choice repeated, guided_json in a request part', async () => {
    const simple = new FormData();
    simple.append('prompt', 'Read the receipt.');
    simple.append('image', new Blob([imageBytes('photo-640x480.jpg')], { type: 'image/jpeg' }), 'photo.jpg');
    simple.append('response_format', JSON.stringify(jsonSchema));
    simple.append('temperature', '0');
    simple.append('max_tokens', '200');
    const a = await postForm(simple);
    assert.equal(a.statusCode, 200, a.body);
    assertReceipt((JSON.parse(a.body) as Json).choices[0].message.content);

    const choices = new FormData();
    choices.append('prompt', 'Pick one.');
    for (const c of ['left', 'right']) choices.append('guided_choice', c);
    const b = await postForm(choices);
    assert.ok(['left', 'right'].includes((JSON.parse(b.body) as Json).choices[0].message.content), b.body);

    const full = new FormData();
    full.append(
      'request',
      JSON.stringify({
        messages: [imageMessage('upload://photo', 'Read it.')],
        guided_json: RECEIPT,
        temperature: 0,
        max_tokens: 200,
        stream: true,
      }),
    );
    full.append('photo', new Blob([imageBytes('photo-640x480.jpg')], { type: 'image/jpeg' }), 'photo.jpg');
    const c = await postForm(full);
    assert.equal(c.statusCode, 200, c.body);
    const text = (parseSse(c.body) as Json[]).flatMap((chunk) => chunk.choices.map((x: Json) => x.delta.content ?? '')).join('');
    assertReceipt(text);

    const bad = new FormData();
    bad.append('prompt', 'x');
    bad.append('response_format', '{"type": ');
    assertError(await postForm(bad), 400, 'invalid_json', 'response_format');
  });

  test('the openai SDK: chat.completions.parse with a zod schema and with a plain JSON schema', async () => {
    const Receipt = z.object({
      shop: z.string().max(10),
      total: z.number().int().min(0).max(500),
      items: z.array(z.object({ what: z.enum(['tea', 'cake']), n: z.number().int().min(1).max(9) })).max(2),
    });
    const completion = await client.chat.completions.parse({
      model: PACKAGE,
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: dataUrl('photo-640x480.jpg') } }, { type: 'text', text: 'Read the receipt.' }] }],
      response_format: zodResponseFormat(Receipt, 'receipt'),
      temperature: 0,
      max_tokens: 200,
    });
    const message = completion.choices[0].message;
    assert.equal(completion.choices[0].finish_reason, 'stop');
    assert.ok(message.parsed, message.content ?? '');
    assert.deepEqual(Receipt.parse(message.parsed), message.parsed);

    const plain = await client.chat.completions.parse({
      model: PACKAGE,
      messages: [{ role: 'user', content: 'Receipt?' }],
      response_format: { type: 'json_schema', json_schema: { name: 'receipt', schema: RECEIPT, strict: true } },
      temperature: 1,
      seed: 3,
      max_tokens: 200,
    });
    assert.ok(validReceipt(plain.choices[0].message.parsed), plain.choices[0].message.content ?? '');

    await assert.rejects(
      client.chat.completions.create({
        model: PACKAGE,
        messages: [{ role: 'user', content: 'x' }],
        response_format: { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'array', uniqueItems: true } } },
      }),
      (err: unknown) => err instanceof OpenAI.BadRequestError && err.param === 'response_format.json_schema.schema' && /uniqueItems/.test(err.message),
    );
  });

  test('400s before any 200: unsupported keywords (streamed too), bad grammars, two constraints', async () => {
    const base = { messages: [{ role: 'user', content: 'x' }], max_tokens: 5 };
    for (const stream of [false, true]) {
      const e = assertError(
        await post({ ...base, stream, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { t: { type: 'array', uniqueItems: true } } } } } }),
        400,
        'invalid_request',
        'response_format.json_schema.schema',
      );
      assert.match(e.message, /unsupported JSON Schema keyword "uniqueItems" at \/properties\/t/);
    }
    assertError(await post({ ...base, guided_regex: '(' }), 400, 'invalid_request', 'guided_regex');
    assertError(await post({ ...base, guided_grammar: 'start: nothing_here' }), 400, 'invalid_request', 'guided_grammar');
    assertError(await post({ ...base, guided_json: '{"type":' }), 400, 'invalid_request', 'guided_json');
    const two = assertError(await post({ ...base, response_format: { type: 'json_object' }, guided_regex: 'a' }), 400, 'invalid_request', 'guided_regex');
    assert.match(two.message, /response_format and guided_regex/);
    // and it still serves
    const ok = JSON.parse((await post({ ...base, guided_choice: ['fine'] })).body) as Json;
    assert.equal(ok.choices[0].message.content, 'fine');
  });
});
