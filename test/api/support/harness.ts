// Shared set-up for the API tests: an app over a fake (or real) engine, listening or not,
// fixtures as data URLs, response validation against openapi.yaml, and an SSE parser that
// checks the framing as it goes.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { buildApp } from '../../../src/api/app.js';
import type { ApiConfig } from '../../../src/api/context.js';
import { EngineHost, type Phase } from '../../../src/api/engine-host.js';
import { openApiSpec, type SchemaName } from '../../../src/api/openapi.js';
import type { Resolver } from '../../../src/api/remote-image.js';
import { defaultConfig } from '../../../src/config.js';
import type { Engine } from '../../../src/engine/types.js';
import { FakeEngine } from './fake-engine.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const imagesDir = join(repoRoot, 'test/fixtures/images');

export function testConfig(overrides: Partial<ApiConfig> = {}): ApiConfig {
  return { ...defaultConfig(), ...overrides };
}

export interface TestApp {
  app: FastifyInstance;
  host: EngineHost;
  engine: Engine | null;
  /** The base URL once listen() was called. */
  url: string;
  listen(): Promise<string>;
  close(): Promise<void>;
}

export async function startApp(
  options: {
    engine?: Engine | null;
    config?: Partial<ApiConfig>;
    phase?: Phase;
    listen?: boolean;
    logger?: FastifyServerOptions['logger'];
    resolve?: Resolver;
  } = {},
): Promise<TestApp> {
  const engine = options.engine === undefined ? new FakeEngine() : options.engine;
  const host = new EngineHost(engine ?? undefined, options.phase ?? 'ready');
  const app = await buildApp({
    config: testConfig(options.config),
    host,
    processMetrics: false,
    version: { name: 'tinyllava-serve', version: 'test' },
    logger: options.logger,
    resolve: options.resolve,
  });
  const t: TestApp = {
    app,
    host,
    engine,
    url: '',
    async listen() {
      await app.listen({ host: '127.0.0.1', port: 0 });
      t.url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      return t.url;
    },
    close: () => app.close(),
  };
  if (options.listen) await t.listen();
  return t;
}

export function imageBytes(file: string): Buffer {
  return readFileSync(join(imagesDir, file));
}

export function dataUrl(file: string, mediaType = file.endsWith('.png') ? 'image/png' : 'image/jpeg'): string {
  return `data:${mediaType};base64,${imageBytes(file).toString('base64')}`;
}

/** A user message with an image and a question. */
export function imageMessage(url: string, text = 'What is in this picture?'): { role: 'user'; content: unknown[] } {
  return { role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text }] };
}

/** Fails with ajv's errors unless `data` matches the named schema of openapi.yaml. */
export function assertMatches(schema: SchemaName, data: unknown): void {
  const errors = openApiSpec().errors(schema, data);
  assert.equal(errors, null, `${schema}: ${JSON.stringify(errors, null, 1)}\n${JSON.stringify(data).slice(0, 2000)}`);
}

/** Asserts an OpenAI error envelope with the given status, code and (optionally) param. */
export function assertError(
  res: { statusCode: number; body: string; headers: Record<string, unknown> },
  status: number,
  code: string,
  param?: string | null,
): { message: string; type: string; param: string | null; code: string | null } {
  assert.equal(res.statusCode, status, res.body);
  const body = JSON.parse(res.body) as { error: { message: string; type: string; param: string | null; code: string | null } };
  assertMatches('ErrorResponse', body);
  assert.equal(body.error.code, code, res.body);
  if (param !== undefined) assert.equal(body.error.param, param, res.body);
  if (status === 429 || status === 503) assert.ok(res.headers['retry-after'], 'Retry-After');
  return body.error;
}

/**
 * Splits an SSE body into its `data:` payloads, asserting the framing exactly: every event is
 * one `data: ` line followed by a blank line, and the last is [DONE].
 */
export function parseSse(text: string): unknown[] {
  assert.ok(text.endsWith('data: [DONE]\n\n'), `stream must end with [DONE]: ${JSON.stringify(text.slice(-80))}`);
  const blocks = text.slice(0, -2).split('\n\n');
  const events: unknown[] = [];
  for (const block of blocks) {
    assert.match(block, /^data: [^\n]+$/, `malformed event ${JSON.stringify(block.slice(0, 80))}`);
    const data = block.slice('data: '.length);
    events.push(data === '[DONE]' ? '[DONE]' : JSON.parse(data));
  }
  assert.equal(events.indexOf('[DONE]'), events.length - 1, '[DONE] only at the end');
  return events.slice(0, -1);
}

export function chatBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { messages: [{ role: 'user', content: 'Hello there' }], ...extra };
}
