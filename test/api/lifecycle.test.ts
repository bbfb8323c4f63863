// The server around the generations: probes while loading, ready, failed and draining; the
// drain itself; request ids; API keys; unknown routes; and what the logs leave out.

import assert from 'node:assert/strict';
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { loggerOptions } from '../../src/api/logging.js';
import { drainAndClose, shutDown } from '../../src/api/shutdown.js';
import { assertError, assertMatches, chatBody, dataUrl, imageMessage, parseSse, startApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

type Json = Record<string, any>;

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  socket: Socket;
}

/** One request through a keep-alive agent, so that the connection's fate can be watched. */
function send(agent: Agent, url: string, body?: object): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent, method: body ? 'POST' : 'GET', headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text, socket: req.socket! }));
    });
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

const closedSocket = (socket: Socket): Promise<void> =>
  socket.destroyed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));

describe('probes and lifecycle', () => {
  test('while the engine does not exist yet: /health 200, /ready 503 loading, generation 503', async () => {
    const t = await startApp({ engine: null, phase: 'loading' });
    try {
      const health = await t.app.inject('/health');
      assert.equal(health.statusCode, 200);
      assertMatches('Health', health.json());
      const ready = await t.app.inject('/ready');
      assert.equal(ready.statusCode, 503);
      assert.deepEqual(ready.json(), { status: 'loading' });
      assert.ok(ready.headers['retry-after']);
      assertError(await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() }), 503, 'model_not_ready');
      assertError(await t.app.inject('/v1/models'), 503, 'model_not_ready');
      const version = (await t.app.inject('/version')).json();
      assertMatches('Version', version);
      assert.equal(version.model, null);
    } finally {
      await t.close();
    }
  });

  test('attach(): /ready turns 200 only once the engine is ready', async () => {
    let warmedUp!: () => void;
    const engine = new FakeEngine({ readyWhen: new Promise<void>((r) => (warmedUp = r)) });
    const t = await startApp({ engine: null, phase: 'loading' });
    try {
      const attached = t.host.attach(engine);
      assert.equal((await t.app.inject('/ready')).statusCode, 503);
      // The model's name is known from its package while the sessions load.
      assert.equal((await t.app.inject('/v1/models')).statusCode, 200);
      assertError(await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() }), 503, 'model_not_ready');
      warmedUp();
      await attached;
      const ready = await t.app.inject('/ready');
      assert.equal(ready.statusCode, 200);
      assertMatches('Readiness', ready.json());
      assert.equal((await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() })).statusCode, 200);
    } finally {
      await t.close();
    }
  });

  test('a model that failed to load: /ready 503 failed with the reason, generation 500', async () => {
    const t = await startApp({ engine: null, phase: 'loading' });
    try {
      t.host.fail(new Error('manifest.json: unsupported format_version 9'));
      const ready = await t.app.inject('/ready');
      assert.equal(ready.statusCode, 503);
      assert.deepEqual(ready.json(), { status: 'failed', message: 'manifest.json: unsupported format_version 9' });
      assertError(await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() }), 500, 'model_error');
    } finally {
      await t.close();
    }
  });

  test('/v1/models and /version once ready', async () => {
    const t = await startApp();
    try {
      const models = (await t.app.inject('/v1/models')).json();
      assertMatches('ModelList', models);
      assert.equal(models.data[0].id, 'fake-vlm');
      assert.equal(models.data[0].max_model_len, 256);
      const version = (await t.app.inject('/version')).json();
      assert.deepEqual(version, { name: 'tinyllava-serve', version: 'test', node: process.version, model: 'fake-vlm' });
    } finally {
      await t.close();
    }
  });
});

describe('graceful shutdown', () => {
  test('draining: /ready 503, new requests 503, the in-flight stream finishes whole', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 30 });
    const t = await startApp({ engine, listen: true });
    // A finished request, streamed or not, is no longer in flight.
    assert.equal((await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chatBody({ max_tokens: 1 })) })).status, 200);
    assert.equal(t.host.inFlightCount, 0);
    const streaming = fetch(`${t.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chatBody({ stream: true })) });
    const res = await streaming;
    assert.equal(res.status, 200);
    const body = res.text();
    const drain = drainAndClose(t.app, t.host, { drainTimeoutMs: 5000 });
    // The drain closed the client's idle pooled connection; let the client see that.
    await sleep(20);
    // The listener stays open while draining, so that probes see the 503.
    const ready = await fetch(`${t.url}/ready`);
    assert.equal(ready.status, 503);
    assert.deepEqual(await ready.json(), { status: 'draining' });
    const refused = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chatBody()) });
    assertError({ statusCode: refused.status, body: await refused.text(), headers: Object.fromEntries(refused.headers) }, 503, 'shutting_down');
    const events = parseSse(await body) as Json[];
    assert.equal(events.at(-1)!.choices[0].finish_reason, 'stop');
    assert.deepEqual(await drain, { drained: true, cancelled: 0 });
    assert.equal(engine.cancelled, 0);
  });

  test('SIGTERM: /ready 503 at once, requests served with Connection: close for the delay, then refused', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 30 });
    const t = await startApp({ engine, listen: true });
    const agent = new Agent({ keepAlive: true });
    try {
      const before = await send(agent, `${t.url}/ready`);
      assert.equal(before.status, 200);
      assert.equal(before.headers.connection, 'keep-alive');
      let draining!: () => void;
      const drainStarted = new Promise<void>((resolve) => (draining = resolve));
      const stopped = shutDown(t.app, t.host, { shutdownDelayMs: 500, drainTimeoutMs: 10_000, onDraining: () => draining() });

      const ready = await send(agent, `${t.url}/ready`);
      assert.equal(ready.status, 503);
      assert.deepEqual(JSON.parse(ready.body), { status: 'draining' });
      // Still served during the delay, each answer ending its connection.
      const served = await send(agent, `${t.url}/v1/chat/completions`, chatBody({ max_tokens: 1 }));
      assert.equal(served.status, 200, served.body);
      assert.equal(served.headers.connection, 'close');
      await closedSocket(served.socket);
      // A stream that starts within the delay runs to its end through the drain.
      const stream = send(agent, `${t.url}/v1/chat/completions`, chatBody({ stream: true, ignore_eos: true, max_tokens: 40 }));
      await drainStarted;
      const refused = await send(new Agent(), `${t.url}/v1/chat/completions`, chatBody());
      assertError({ statusCode: refused.status, body: refused.body, headers: refused.headers }, 503, 'shutting_down');
      assert.equal(refused.headers.connection, 'close');
      const streamed = await stream;
      assert.equal(streamed.headers.connection, 'close');
      const events = parseSse(streamed.body) as Json[];
      assert.equal(events.at(-1)!.choices[0].finish_reason, 'length');
      assert.deepEqual(await stopped, { drained: true, cancelled: 0 });
    } finally {
      agent.destroy();
    }
  });

  test('the drain closes idle keep-alive connections, and each one whose response ends during it', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 20 });
    const t = await startApp({ engine, listen: true });
    const idle = new Agent({ keepAlive: true });
    const short = new Agent({ keepAlive: true });
    try {
      const probe = await send(idle, `${t.url}/health`);
      assert.equal(probe.headers.connection, 'keep-alive');
      // Both responses begin before the shutdown, with keep-alive.
      const long = send(new Agent(), `${t.url}/v1/chat/completions`, chatBody({ stream: true, ignore_eos: true, max_tokens: 60 }));
      const brief = send(short, `${t.url}/v1/chat/completions`, chatBody({ stream: true, ignore_eos: true, max_tokens: 5 }));
      await sleep(30);
      const drain = drainAndClose(t.app, t.host, { drainTimeoutMs: 10_000 });
      await closedSocket(probe.socket);
      const briefReply = await brief;
      assert.equal(briefReply.headers.connection, 'keep-alive');
      await closedSocket(briefReply.socket);
      assert.equal(t.host.inFlightCount, 1, 'closed while the long stream still runs');
      assert.equal((await long).status, 200);
      assert.deepEqual(await drain, { drained: true, cancelled: 0 });
    } finally {
      idle.destroy();
      short.destroy();
    }
  });

  test('past the drain timeout, what still runs is cancelled with a shutting_down error event', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 20 });
    const t = await startApp({ engine, listen: true });
    const res = await fetch(`${t.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chatBody({ stream: true, ignore_eos: true, max_tokens: 200 })),
    });
    const body = res.text();
    await sleep(50);
    const result = await drainAndClose(t.app, t.host, { drainTimeoutMs: 100 });
    assert.deepEqual(result, { drained: false, cancelled: 1 });
    const events = parseSse(await body) as Json[];
    assert.equal(events.at(-1)!.error.code, 'shutting_down');
    assert.equal(engine.cancelled, 1);
  });
});

test('shutdown does not wait for idle keep-alive connections', async () => {
  const t = await startApp({ engine: new FakeEngine(), listen: true });
  // A client that opened a connection and never sent a request: fastify's keep-alive timeout
  // (72 s) would hold close() open if the drain did not close idle connections itself.
  const { port } = new URL(t.url);
  const socket = connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const closed = drainAndClose(t.app, t.host, { drainTimeoutMs: 1000 }).then(() => 'closed');
  const outcome = await Promise.race([closed, sleep(20_000).then(() => 'still waiting after 20 s')]);
  socket.destroy();
  assert.equal(outcome, 'closed');
});

describe('request ids, keys, routes and logs', () => {
  test('X-Request-Id: a usable one is echoed, anything else replaced; every response carries one', async () => {
    const t = await startApp();
    try {
      const mine = await t.app.inject({ url: '/health', headers: { 'x-request-id': 'abc-123.DEF:4' } });
      assert.equal(mine.headers['x-request-id'], 'abc-123.DEF:4');
      const bad = await t.app.inject({ url: '/health', headers: { 'x-request-id': 'no spaces\nor newlines' } });
      assert.match(String(bad.headers['x-request-id']), /^[0-9a-f-]{36}$/);
      const error = await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [] } });
      assert.match(String(error.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    } finally {
      await t.close();
    }
  });

  test('API keys guard /v1/* only', async () => {
    const t = await startApp({ config: { apiKeys: ['k1'] } });
    try {
      const none = await t.app.inject('/v1/models');
      assertError(none, 401, 'invalid_api_key');
      assert.equal(none.headers['www-authenticate'], 'Bearer');
      assert.equal(JSON.parse(none.body).error.type, 'authentication_error');
      assertError(await t.app.inject({ url: '/v1/models', headers: { authorization: 'Bearer k2' } }), 401, 'invalid_api_key');
      assertError(await t.app.inject({ url: '/v1/models', headers: { authorization: 'Basic k1' } }), 401, 'invalid_api_key');
      assert.equal((await t.app.inject({ url: '/v1/models', headers: { authorization: 'Bearer k1' } })).statusCode, 200);
      // a body is not read before the key is checked
      assertError(await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: '{not json' , headers: { 'content-type': 'application/json' } }), 401, 'invalid_api_key');
      for (const url of ['/health', '/ready', '/version', '/metrics']) assert.equal((await t.app.inject(url)).statusCode, 200, url);
    } finally {
      await t.close();
    }
  });

  test('an unknown route is a 404, a method a route does not take a 405 with Allow, both in the envelope', async () => {
    const t = await startApp();
    try {
      assertError(await t.app.inject('/v1/completions'), 404, 'route_not_found');
      const get = await t.app.inject('/v1/chat/completions');
      assertError(get, 405, 'method_not_allowed');
      assert.equal(get.headers.allow, 'POST');
      for (const method of ['DELETE', 'PUT', 'PATCH', 'OPTIONS', 'POST'] as const) {
        const res = await t.app.inject({ method, url: '/v1/models?x=1' });
        assertError(res, 405, 'method_not_allowed');
        assert.equal(res.headers.allow, 'GET, HEAD', method);
      }
      assert.equal((await t.app.inject({ method: 'DELETE', url: '/v1/models/fake-vlm' })).headers.allow, 'GET, HEAD');
      assertError(await t.app.inject({ method: 'DELETE', url: '/v1/models/a/b' }), 404, 'route_not_found');
    } finally {
      await t.close();
    }
  });

  test('logs carry request ids and never image bytes or keys', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(...String(chunk).split('\n').filter(Boolean));
        done();
      },
    });
    const logger = { ...(loggerOptions('debug') as object), stream: sink };
    const t = await startApp({ logger, config: { apiKeys: ['sk-secret-key'] } });
    try {
      const url = dataUrl('photo-640x480.jpg');
      const auth = { authorization: 'Bearer sk-secret-key', 'x-request-id': 'req-log-1' };
      assert.equal((await t.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: auth, payload: { messages: [imageMessage(url)] } })).statusCode, 200);
      const bad = { messages: [imageMessage(url)], temperature: 9 };
      assert.equal((await t.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: auth, payload: bad })).statusCode, 400);
      const all = lines.join('\n');
      assert.ok(lines.length >= 4, all);
      assert.ok(lines.every((l) => JSON.parse(l).reqId === undefined || JSON.parse(l).reqId === 'req-log-1'));
      assert.ok(lines.some((l) => JSON.parse(l).reqId === 'req-log-1'));
      assert.ok(!all.includes(url.slice(30, 90)), 'no image bytes in the logs');
      assert.ok(!all.includes('sk-secret-key'), 'no API keys in the logs');
    } finally {
      await t.close();
    }
  });
});
