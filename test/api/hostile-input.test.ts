// Input that once produced a 500, or was answered outside the OpenAI envelope, or was counted
// as the wrong thing: JSON nested thousands deep, `__proto__` keys, HTTP framing errors, a client
// that vanishes just before its 200, uploads cut short. Each gets its 4xx in the envelope (or,
// for a client that is gone, nothing but a cancellation count), and the server serves on.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { loggerOptions } from '../../src/api/logging.js';
import { assertError, chatBody, dataUrl, imageMessage, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

type Json = Record<string, any>;

/** Sends raw bytes on a fresh connection; resolves with everything received until it closes. */
function raw(url: string, bytes: string | Buffer, keepOpenMs = 0): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(bytes);
      if (keepOpenMs > 0) setTimeout(() => socket.end(), keepOpenMs);
    });
    let out = '';
    socket.on('data', (d) => (out += d.toString('latin1')));
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
  });
}

/** Status line, headers and parsed JSON body of one raw HTTP response. */
function parseResponse(text: string): { status: number; headers: Record<string, string>; body: Json } {
  const [head, ...rest] = text.split('\r\n\r\n');
  const [statusLine, ...lines] = head.split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(statusLine.split(' ')[1]), headers, body: JSON.parse(rest.join('\r\n\r\n')) as Json };
}

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** A log sink, to check what was logged at error level. */
function logSink(): { lines: Json[]; stream: Writable } {
  const lines: Json[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Json);
      done();
    },
  });
  return { lines, stream };
}

describe('hostile input', () => {
  let t: TestApp;
  let engine: FakeEngine;
  const logs = logSink();
  before(async () => {
    engine = new FakeEngine();
    t = await startApp({ engine, listen: true, logger: { ...(loggerOptions('info', { stream: logs.stream }) as object) } });
  });
  after(() => t.close());

  const post = (payload: string | object, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
    t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload, headers });
  const good = async (): Promise<void> => assert.equal((await post(chatBody())).statusCode, 200, 'the server still serves');

  test('JSON nested 100,000 deep: a 400 naming the field, with a short message', async () => {
    const depth = 100_000;
    const nested = `${'['.repeat(depth)}${']'.repeat(depth)}`;
    for (const [body, param] of [
      [`{"messages":[{"role":"user","content":${nested}}]}`, 'messages[0].content[0]'],
      [`{"messages":[{"role":"user","content":"x"}],"temperature":${nested}}`, 'temperature'],
      [`{"messages":[{"role":"user","content":"x"}],"stop":${nested}}`, 'stop[0]'],
      [`{"messages":[{"role":"user","content":"x"}],"extra":${nested}}`, 'extra'],
    ] as const) {
      const error = assertError(await post(body), 400, 'invalid_request', param);
      assert.ok(error.message.length < 200, error.message);
    }
    await good();
  });

  test('a __proto__ key is refused by name, where it is (not "invalid JSON")', async () => {
    const error = assertError(await post('{"messages":[{"role":"user","content":"x","__proto__":{"admin":true}}]}'), 400, 'invalid_request', 'messages[0].__proto__');
    assert.match(error.message, /__proto__/);
    assertError(await post('{"messages":[{"role":"user","content":"x"}],"constructor":{"prototype":{"a":1}}}'), 400, 'invalid_request', 'constructor.prototype');
    assertError(await post('{"__proto__":[]}'), 400, 'invalid_request', '__proto__');
    // in the multipart request field too
    const form = new FormData();
    form.append('request', '{"messages":[{"role":"user","content":"x"}],"__proto__":{}}');
    const res = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', body: form });
    assertError({ statusCode: res.status, body: await res.text(), headers: {} }, 400, 'invalid_request', 'request.__proto__');
    // a word in a string is no key
    assert.equal((await post({ messages: [{ role: 'user', content: 'what is __proto__ or a constructor?' }] })).statusCode, 200);
    await good();
  });

  test('malformed JSON quotes the parser to the client', async () => {
    const error = assertError(await post('{"messages": nope}'), 400, 'invalid_json');
    assert.match(error.message, /^the request body is not valid JSON: /);
  });

  test('HTTP framing errors are answered in the envelope, and the connection closed', async () => {
    const cases: [string, string, number, string][] = [
      [
        'Content-Length with Transfer-Encoding',
        'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
        400,
        'invalid_http_request',
      ],
      [
        'a body longer than its Content-Length',
        'POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}{"messages": "the rest of it"}',
        400,
        'invalid_http_request',
      ],
      ['a request line that is not HTTP', 'HELLO THERE\r\n\r\n', 400, 'invalid_http_request'],
      ['headers over the size limit', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`, 431, 'headers_too_large'],
    ];
    for (const [name, bytes, status, code] of cases) {
      const text = await raw(t.url, bytes);
      // A body longer than its Content-Length: the first request is answered (405 here), the rest is the broken one.
      const last = text.slice(text.lastIndexOf('HTTP/1.1 '));
      const res = parseResponse(last);
      assert.equal(res.status, status, `${name}: ${text}`);
      assert.equal(res.body.error.code, code, name);
      assert.equal(res.body.error.type, 'invalid_request_error', name);
      assert.equal(res.headers.connection, 'close', name);
    }
    const metrics = (await t.app.inject('/metrics')).body;
    assert.ok(metric(metrics, 'tinyllava_request_errors_total{model_name="fake-vlm",type="invalid_request_error",code="invalid_http_request"}') >= 3, metrics);
    await good();
  });

  test('a client that vanishes just before its 200 is a cancellation, never a 500', async () => {
    const sockets: Socket[] = [];
    const sink = logSink();
    const victim = new FakeEngine({
      tokenDelayMs: 0,
      // The first token comes out just after the client went away (its cancellation had not
      // reached the engine yet): the 200 can no longer be sent.
      beforeFirstDelta: async () => {
        const socket = sockets.shift()!;
        socket.destroy();
        await once(socket, 'close');
        await sleep(5);
      },
    });
    const v = await startApp({ engine: victim, listen: false, logger: { ...(loggerOptions('info', { stream: sink.stream }) as object) } });
    v.app.addHook('onRequest', async (request) => void sockets.push(request.raw.socket));
    await v.listen();
    try {
      for (let i = 0; i < 5; i++) {
        await fetch(`${v.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(chatBody({ stream: true, max_tokens: 50, ignore_eos: true })),
        }).then(
          (r) => r.text(),
          () => null,
        );
      }
      await sleep(100);
      const metrics = (await v.app.inject('/metrics')).body;
      assert.equal(metric(metrics, 'tinyllava_request_errors_total{model_name="fake-vlm",type="server_error",code="internal_error"}'), 0, metrics);
      assert.equal(metric(metrics, 'tinyllava_requests_cancelled_total{model_name="fake-vlm"}'), 5, metrics);
      assert.deepEqual(sink.lines.filter((l) => l.level >= 50), [], 'nothing logged as an error');
      assert.ok(!sink.lines.some((l) => (l.res as Json | undefined)?.statusCode === 500), 'no 500 logged');
      assert.equal(victim.running, 0, 'every generation ended');
    } finally {
      await v.close();
    }
  });

  test('an upload cut short is counted as a cancellation, not as a client error', async () => {
    const before = (await t.app.inject('/metrics')).body;
    const boundary = 'XyZ';
    const head =
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: 1000000\r\n\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nHi\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n`;
    // half an image, then the client goes away
    await raw(t.url, Buffer.concat([Buffer.from(head), Buffer.alloc(50_000, 1)]), 200);
    // and a JSON body cut short
    await raw(t.url, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"messages": [', 200);
    await sleep(100);
    const after = (await t.app.inject('/metrics')).body;
    const errors = (text: string) => metric(text, 'tinyllava_request_errors_total{model_name="fake-vlm",type="invalid_request_error",code="invalid_request"}');
    assert.equal(errors(after), errors(before), 'no client error counted');
    assert.equal(metric(after, 'tinyllava_requests_cancelled_total{model_name="fake-vlm"}') - metric(before, 'tinyllava_requests_cancelled_total{model_name="fake-vlm"}'), 2);
    await good();
  });

  test('no line of these logs is an error', () => {
    assert.deepEqual(
      logs.lines.filter((l) => l.level >= 50),
      [],
    );
    assert.ok(logs.lines.some((l) => l.code === 'invalid_request'), 'the 400s were logged at info');
  });

  test('images travel as before', async () => {
    assert.equal((await post({ messages: [imageMessage(dataUrl('small-100x80.png'))] })).statusCode, 200);
  });
});
