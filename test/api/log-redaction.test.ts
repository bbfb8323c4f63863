// Logs never hold what clients send, at any level (trace included, where @fastify/multipart
// logs the request headers and node's parser errors carry the raw bytes): the same requests,
// each carrying marked secrets, prompts, image bytes and signed URLs, are sent at every level,
// in both formats, and the marks are looked for in everything logged.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import pinoPretty from 'pino-pretty';
import { loggerOptions } from '../../src/api/logging.js';
import { dataUrl, imageBytes, imageMessage, startApp } from './support/harness.js';

const KEY = 'sk-SECRET-KEY-123';
const WRONG_KEY = 'sk-WRONG-KEY-000';
const PROMPT = 'PROMPT-MARKER-789';
const RAW = 'RAW-BYTES-MARKER';
const SIG = 'SECRET-SIG-456';
const QUERY = 'SECRET-QUERY-321';
const IMAGE = imageBytes('small-100x80.png');
const IMAGE_B64 = IMAGE.toString('base64').slice(40, 100);

const MARKS = [KEY, WRONG_KEY, PROMPT, RAW, SIG, QUERY, IMAGE_B64];

let images: Server;
let imagesUrl: string;

before(async () => {
  images = createServer((_req, res) => res.writeHead(200, { 'content-type': 'image/png' }).end(IMAGE));
  await new Promise<void>((resolve) => images.listen(0, '127.0.0.1', resolve));
  imagesUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((resolve) => images.close(() => resolve())));

function sink(): { text: () => string; stream: Writable } {
  const chunks: string[] = [];
  return { text: () => chunks.join(''), stream: new Writable({ write: (c, _e, done) => (chunks.push(String(c)), done()) }) };
}

function rawRequest(url: string, bytes: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(bytes));
    let out = '';
    socket.on('data', (d) => (out += String(d)));
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
  });
}

/** Every kind of request that could put a mark in a log line. */
async function sendEverything(url: string): Promise<void> {
  const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
  const post = (path: string, body: unknown, headers: Record<string, string> = auth) =>
    fetch(`${url}${path}`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) }).then(async (r) => [r.status, await r.text()] as const);

  assert.equal((await post('/v1/chat/completions', { messages: [imageMessage(dataUrl('small-100x80.png'), PROMPT)], max_tokens: 2 }))[0], 200);
  assert.equal((await post('/v1/chat/completions', { messages: [imageMessage(`${imagesUrl}/cat.png?sig=${SIG}`, PROMPT)], max_tokens: 2, stream: true }))[0], 200);
  assert.equal((await post('/v1/chat/completions', { messages: [imageMessage(`http://127.0.0.2:1/x.png?sig=${SIG}`, PROMPT)] }))[0], 400);
  // client errors whose messages quote what was sent
  assert.equal((await post('/v1/chat/completions', { messages: [{ role: 'user', content: PROMPT }], temperature: `${PROMPT}!` }))[0], 400);
  assert.equal((await post('/v1/chat/completions', `{"messages": [${PROMPT}]}`))[0], 400);
  assert.equal((await post('/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: `ftp://${PROMPT}` } }] }] }))[0], 400);
  assert.equal((await post('/v1/chat/completions', { messages: [{ role: 'user', content: PROMPT }] }, { authorization: `Bearer ${WRONG_KEY}`, 'content-type': 'application/json' }))[0], 401);
  assert.equal((await post('/tokenize', { prompt: PROMPT, return_token_strs: true }))[0], 200);
  assert.equal((await post('/detokenize', { tokens: [0, 1] }))[0], 200);
  // an upload: a prompt field and a file holding marked bytes
  const form = new FormData();
  form.append('prompt', PROMPT);
  form.append('image', new Blob([Buffer.concat([IMAGE, Buffer.from(RAW)])], { type: 'image/png' }), 'a.png');
  const up = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}` }, body: form });
  assert.equal(up.status, 200, await up.text());
  // a query string holding a key
  assert.equal((await fetch(`${url}/v1/models?api_key=${QUERY}`, { headers: { authorization: `Bearer ${KEY}` } })).status, 200);
  // a malformed request: node's parser error carries the raw bytes, Authorization included
  const framing = await rawRequest(
    url,
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n${RAW}`,
  );
  assert.match(framing, /^HTTP\/1\.1 400 /);
}

describe('logs hold no secrets, bodies, prompts or images', () => {
  for (const [level, format] of [
    ['trace', 'json'],
    ['debug', 'json'],
    ['info', 'json'],
    ['warn', 'json'],
    ['error', 'json'],
    ['trace', 'pretty'],
  ] as const) {
    test(`at ${level}, ${format}`, async () => {
      const out = sink();
      const pretty = format === 'pretty';
      const logger = loggerOptions(level, { stream: pretty ? pinoPretty({ destination: out.stream, colorize: false, sync: true }) : out.stream });
      const t = await startApp({ logger, listen: true, config: { apiKeys: [KEY], allowedImageDomains: ['127.0.0.1'] } });
      try {
        await sendEverything(t.url);
      } finally {
        await t.close();
      }
      const text = out.text();
      for (const mark of MARKS) assert.ok(!text.includes(mark), `${mark} is in the ${level} logs:\n${text.split('\n').filter((l) => l.includes(mark)).join('\n')}`);
      if (level === 'trace') {
        // the lines that used to leak are there, without what they leaked
        assert.match(text, /Providing options to busboy/);
        assert.match(text, /malformed HTTP request/);
        assert.match(text, /\[redacted\]|\[headers\]/);
      }
      if (level === 'info') assert.match(text, /incoming request/);
      if (pretty) assert.ok(!text.trimStart().startsWith('{'), 'pretty lines are not JSON');
    });
  }
});
