// Uploads: POST /v1/chat/completions as multipart/form-data, in its simple form (prompt +
// image files + scalar fields, as `curl -F` sends them) and with a `request` JSON part whose
// image parts say upload://<field>. Limits are checked while the body streams in.

import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { assertError, assertMatches, imageBytes, parseSse, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

type Json = Record<string, any>;

function form(fields: [string, string | { file: string | Buffer; name?: string; type?: string }][]): FormData {
  const f = new FormData();
  for (const [name, value] of fields) {
    if (typeof value === 'string') f.append(name, value);
    else {
      const bytes = typeof value.file === 'string' ? imageBytes(value.file) : value.file;
      f.append(name, new Blob([bytes], { type: value.type ?? 'application/octet-stream' }), value.name ?? 'upload.bin');
    }
  }
  return f;
}

const photo = { file: 'photo-640x480.jpg', name: 'photo.jpg', type: 'image/jpeg' };

describe('multipart uploads', () => {
  let t: TestApp;
  let engine: FakeEngine;
  before(async () => {
    engine = new FakeEngine();
    t = await startApp({ engine, listen: true, config: { maxUploadBytes: 1024 * 1024, maxImages: 3 } });
  });
  after(() => t.close());

  const post = (body: FormData) => fetch(`${t.url}/v1/chat/completions`, { method: 'POST', body });
  const asInject = async (res: Response) => ({ statusCode: res.status, body: await res.text(), headers: Object.fromEntries(res.headers) });

  test('simple form: prompt, image and typed scalar fields, like curl -F', async () => {
    const res = await post(
      form([
        ['prompt', 'What is in this picture?'],
        ['image', photo],
        ['max_tokens', '4'],
        ['temperature', '0.5'],
        ['seed', '42'],
        ['ignore_eos', 'true'],
        ['stop', 'zzz'],
        ['stop', 'yyy'],
      ]),
    );
    assert.equal(res.status, 200);
    const body = (await res.json()) as Json;
    assertMatches('ChatCompletion', body);
    assert.equal(body.choices[0].message.content, 'The answer is forty');
    assert.equal(body.usage.prompt_tokens_details.image_tokens, 16);
    const r = engine.requests.at(-1)!;
    assert.equal(r.maxTokens, 4);
    assert.equal(r.sampling.temperature, 0.5);
    assert.equal(r.sampling.seed, 42);
    assert.equal(r.ignoreEos, true);
    assert.deepEqual(r.stop, ['zzz', 'yyy']);
    // one user message: the image, then the prompt
    assert.equal(r.messages.length, 1);
    const content = r.messages[0].content as { type: string; data?: Uint8Array; text?: string }[];
    assert.deepEqual(Buffer.from(content[0].data!), imageBytes('photo-640x480.jpg'));
    assert.deepEqual(content[1], { type: 'text', text: 'What is in this picture?' });
  });

  test('simple form: system field and several images in upload order', async () => {
    const res = await post(form([['system', 'Be brief.'], ['prompt', 'Compare.'], ['image', photo], ['image', { file: 'small-100x80.png', type: 'image/png' }]]));
    assert.equal(res.status, 200);
    const r = engine.requests.at(-1)!;
    assert.deepEqual(r.messages[0], { role: 'system', content: 'Be brief.' });
    const content = r.messages[1].content as { data?: Uint8Array }[];
    assert.deepEqual(Buffer.from(content[1].data!), imageBytes('small-100x80.png'));
  });

  test('simple form: stream=true streams, include_usage adds the usage chunk', async () => {
    const res = await post(form([['prompt', 'Hi'], ['image', photo], ['stream', 'true'], ['include_usage', 'true']]));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const events = parseSse(await res.text()) as Json[];
    for (const e of events) assertMatches('ChatCompletionChunk', e);
    assert.equal(events.at(-1)!.usage.prompt_tokens_details.image_tokens, 16);
  });

  test('request part: the JSON body with upload://<field> image parts', async () => {
    const request = {
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image_url', image_url: { url: 'upload://second' } },
            { type: 'image_url', image_url: { url: 'upload://first' } },
            { type: 'text', text: 'Which is larger?' },
          ],
        },
      ],
      max_tokens: 2,
    };
    const res = await post(form([['request', JSON.stringify(request)], ['first', photo], ['second', { file: 'small-100x80.png', type: 'image/png' }]]));
    assert.equal(res.status, 200);
    const content = engine.requests.at(-1)!.messages[0].content as { data?: Uint8Array }[];
    assert.deepEqual(Buffer.from(content[0].data!), imageBytes('small-100x80.png'));
    assert.deepEqual(Buffer.from(content[1].data!), imageBytes('photo-640x480.jpg'));
    assert.equal(engine.requests.at(-1)!.maxTokens, 2);
  });

  test('request part sent as a JSON-typed part (curl -F "request=<req.json;type=application/json")', async () => {
    const f = new FormData();
    f.append('request', new Blob([JSON.stringify({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'upload://img' } }] }], stream: true })], { type: 'application/json' }));
    f.append('img', new Blob([imageBytes('photo-640x480.jpg')], { type: 'image/jpeg' }), 'p.jpg');
    const res = await post(f);
    assert.equal(res.status, 200);
    parseSse(await res.text());
  });

  const refusals: [string, () => FormData, number, string, string?][] = [
    ['no prompt', () => form([['image', photo]]), 400, 'invalid_request', 'prompt'],
    ['a scalar that does not parse', () => form([['prompt', 'x'], ['temperature', 'hot']]), 400, 'invalid_request', 'temperature'],
    ['a scalar out of range', () => form([['prompt', 'x'], ['top_p', '0']]), 400, 'invalid_request', 'top_p'],
    ['an unknown field', () => form([['prompt', 'x'], ['colour', 'red']]), 400, 'invalid_request', 'colour'],
    ['a repeated single field', () => form([['prompt', 'x'], ['prompt', 'y']]), 400, 'invalid_request', 'prompt'],
    ['a file under another name in the simple form', () => form([['prompt', 'x'], ['picture', photo]]), 400, 'invalid_request', 'picture'],
    ['a file that is not an image', () => form([['prompt', 'x'], ['image', { file: Buffer.from('just text') }]]), 400, 'invalid_image'],
    ['request that is not JSON', () => form([['request', '{nope'], ['image', photo]]), 400, 'invalid_json', 'request'],
    ['request plus other fields', () => form([['request', '{"messages":[{"role":"user","content":"x"}]}'], ['max_tokens', '3']]), 400, 'invalid_request', 'max_tokens'],
    ['an upload no image part refers to', () => form([['request', '{"messages":[{"role":"user","content":"x"}]}'], ['img', photo]]), 400, 'invalid_request', 'img'],
    [
      'upload:// naming a missing field',
      () => form([['request', JSON.stringify({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'upload://nope' } }] }] })]]),
      400,
      'invalid_image_url',
    ],
    ['more files than MAX_IMAGES', () => form([['prompt', 'x'], ['image', photo], ['image', photo], ['image', photo], ['image', photo]]), 413, 'too_many_uploads'],
    ['a file over MAX_UPLOAD_SIZE', () => form([['prompt', 'x'], ['image', { file: Buffer.alloc(1024 * 1024 + 1, 0xff) }]]), 413, 'upload_too_large'],
  ];
  for (const [name, make, status, code, param] of refusals) {
    test(`refused: ${name} -> ${status} ${code}`, async () => {
      assertError(await asInject(await post(make())), status, code, param);
      const ok = await post(form([['prompt', 'still there?']]));
      assert.equal(ok.status, 200);
    });
  }
});

describe('multipart limits while streaming in', () => {
  test('an oversized upload is refused before the client has finished sending it', async () => {
    const t = await startApp({ listen: true, config: { maxUploadBytes: 32 * 1024, bodyLimitBytes: 64 * 1024 * 1024 } });
    try {
      const boundary = 'xxBOUNDARYxx';
      const { port } = new URL(t.url);
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest({
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'transfer-encoding': 'chunked' },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode!);
          req.destroy();
        });
        req.on('error', (err) => (/ECONNRESET|EPIPE/.test(String(err)) ? undefined : reject(err)));
        req.write(`--${boundary}\r\ncontent-disposition: form-data; name="image"; filename="a.jpg"\r\ncontent-type: image/jpeg\r\n\r\n`);
        req.write(Buffer.alloc(64 * 1024, 0xff));
        // ...and never end the body: the answer must come anyway.
      });
      assert.equal(status, 413);
    } finally {
      await t.close();
    }
  });

  test('a Content-Length over BODY_LIMIT is refused before reading', async () => {
    const t = await startApp({ config: { bodyLimitBytes: 16 * 1024, maxUploadBytes: 16 * 1024 } });
    try {
      const payload = `--b\r\ncontent-disposition: form-data; name="prompt"\r\n\r\n${'x'.repeat(20 * 1024)}\r\n--b--\r\n`;
      const res = await t.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { 'content-type': 'multipart/form-data; boundary=b' }, payload });
      assertError(res, 413, 'body_too_large');
    } finally {
      await t.close();
    }
  });

  test('a malformed multipart body is a 400, not a 500', async () => {
    const t = await startApp();
    try {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: { 'content-type': 'multipart/form-data; boundary=b' },
        payload: '--b\r\ncontent-disposition: form-data; name="prompt"\r\n\r\nunterminated',
      });
      assert.equal(res.statusCode, 400, res.body);
      assertMatches('ErrorResponse', JSON.parse(res.body));
    } finally {
      await t.close();
    }
  });
});
