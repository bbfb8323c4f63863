// GET /metrics: vLLM's metric names under tinyllava_, the time-to-first-token breakdown, images,
// errors by type, engine gauges from stats(), process metrics; and the README lists them all.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildApp } from '../../src/api/app.js';
import { EngineHost } from '../../src/api/engine-host.js';
import { ApiMetrics } from '../../src/api/metrics.js';
import { chatBody, dataUrl, imageMessage, repoRoot, startApp, testConfig } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

const OURS = [
  'num_requests_running',
  'num_requests_waiting',
  'kv_cache_usage_perc',
  'time_to_first_token_seconds',
  'inter_token_latency_seconds',
  'e2e_request_latency_seconds',
  'request_queue_time_seconds',
  'request_prefill_time_seconds',
  'request_decode_time_seconds',
  'request_image_preprocess_time_seconds',
  'request_vision_encoder_time_seconds',
  'prompt_tokens_total',
  'generation_tokens_total',
  'request_success_total',
  'images_processed_total',
  'request_errors_total',
  'request_timeouts_total',
  'image_cache_hits_total',
  'image_cache_misses_total',
  'image_cache_bytes',
  'prefix_cache_queries_total',
  'prefix_cache_hits_total',
  'prefix_cache_bytes',
  'requests_cancelled_total',
  'image_fetches_total',
  'image_fetch_seconds',
].map((n) => `tinyllava_${n}`);

/** The value of one sample line, e.g. `tinyllava_prompt_tokens_total` or `x{a="b"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metrics', () => {
  test('every metric is exposed with its type, and counts what happened', async () => {
    const t = await startApp({ engine: new FakeEngine({ tokenDelayMs: 2 }) });
    try {
      const post = (payload: object) => t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload });
      assert.equal((await post({ messages: [imageMessage(dataUrl('photo-640x480.jpg'))] })).statusCode, 200);
      assert.equal((await post(chatBody({ stream: true, max_tokens: 3 }))).statusCode, 200);
      assert.equal((await post(chatBody({ temperature: 7 }))).statusCode, 400);
      assert.equal((await post(chatBody({ model: 'other' }))).statusCode, 404);

      const res = await t.app.inject('/metrics');
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), /^text\/plain/);
      const text = res.body;
      for (const name of OURS) assert.match(text, new RegExp(`^# TYPE ${name} (gauge|counter|histogram)$`, 'm'), name);

      // prompt: 5 words + 16 image tokens + 2, then 2 words + 2; answers: 6 + EOS, then 3
      assert.equal(sample(text, 'tinyllava_prompt_tokens_total{model_name="fake-vlm"}'), 27);
      assert.equal(sample(text, 'tinyllava_generation_tokens_total{model_name="fake-vlm"}'), 10);
      assert.equal(sample(text, 'tinyllava_images_processed_total{model_name="fake-vlm"}'), 1);
      assert.equal(sample(text, 'tinyllava_request_success_total{model_name="fake-vlm",finished_reason="stop"}'), 1);
      assert.equal(sample(text, 'tinyllava_request_success_total{model_name="fake-vlm",finished_reason="length"}'), 1);
      assert.equal(sample(text, 'tinyllava_time_to_first_token_seconds_count{model_name="fake-vlm"}'), 2);
      assert.equal(sample(text, 'tinyllava_request_image_preprocess_time_seconds_count{model_name="fake-vlm"}'), 1);
      assert.equal(sample(text, 'tinyllava_request_vision_encoder_time_seconds_sum{model_name="fake-vlm"}'), 0.003);
      // 5 gaps in the first answer, 2 in the second
      assert.equal(sample(text, 'tinyllava_inter_token_latency_seconds_count{model_name="fake-vlm"}'), 7);
      assert.equal(sample(text, 'tinyllava_request_errors_total{model_name="fake-vlm",type="invalid_request_error",code="invalid_request"}'), 1);
      assert.equal(sample(text, 'tinyllava_request_errors_total{model_name="fake-vlm",type="not_found_error",code="model_not_found"}'), 1);
    } finally {
      await t.close();
    }
  });

  test('running, waiting and KV cache gauges read the engine stats() at scrape time', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 20 });
    const t = await startApp({ engine });
    try {
      const running = t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody({ ignore_eos: true, max_tokens: 20 }) });
      for (let i = 0; i < 100 && engine.running === 0; i++) await sleep(5);
      const text = (await t.app.inject('/metrics')).body;
      assert.equal(sample(text, 'tinyllava_num_requests_running{model_name="fake-vlm"}'), 1);
      assert.equal(sample(text, 'tinyllava_num_requests_waiting{model_name="fake-vlm"}'), 0);
      assert.equal(sample(text, 'tinyllava_kv_cache_usage_perc{model_name="fake-vlm"}'), 0.25);
      await running;
      assert.equal(sample((await t.app.inject('/metrics')).body, 'tinyllava_num_requests_running{model_name="fake-vlm"}'), 0);
    } finally {
      await t.close();
    }
  });

  test('image and prefix cache counters and bytes come from stats() at scrape time', async () => {
    const engine = new FakeEngine();
    let imageCache = { hits: 3, misses: 2, bytes: 4096, entries: 2 };
    let prefixCache = { queries: 900, hits: 736, bytes: 1 << 20 };
    Object.defineProperty(engine, 'stats', { value: () => ({ running: 0, waiting: 0, kvCache: null, imageCache, prefixCache }) });
    const t = await startApp({ engine });
    try {
      let text = (await t.app.inject('/metrics')).body;
      for (const [name, type] of [
        ['image_cache_hits_total', 'counter'],
        ['image_cache_bytes', 'gauge'],
        ['prefix_cache_queries_total', 'counter'],
        ['prefix_cache_hits_total', 'counter'],
        ['prefix_cache_bytes', 'gauge'],
      ]) {
        assert.match(text, new RegExp(`^# TYPE tinyllava_${name} ${type}$`, 'm'));
      }
      const value = (name: string): number | undefined => sample(text, `tinyllava_${name}{model_name="fake-vlm"}`);
      assert.deepEqual(
        ['image_cache_hits_total', 'image_cache_misses_total', 'image_cache_bytes'].map(value),
        [3, 2, 4096],
      );
      assert.deepEqual(['prefix_cache_queries_total', 'prefix_cache_hits_total', 'prefix_cache_bytes'].map(value), [900, 736, 1 << 20]);
      imageCache = { hits: 10, misses: 2, bytes: 2048, entries: 1 };
      prefixCache = { queries: 1000, hits: 800, bytes: 0 };
      text = (await t.app.inject('/metrics')).body;
      assert.deepEqual(['image_cache_hits_total', 'image_cache_bytes'].map(value), [10, 2048]);
      assert.deepEqual(['prefix_cache_queries_total', 'prefix_cache_hits_total', 'prefix_cache_bytes'].map(value), [1000, 800, 0]);
    } finally {
      await t.close();
    }
  });

  test('an engine without stats() reports the gauges as 0', async () => {
    const engine = new FakeEngine();
    Object.defineProperty(engine, 'stats', { value: undefined });
    const t = await startApp({ engine });
    try {
      const text = (await t.app.inject('/metrics')).body;
      assert.equal(sample(text, 'tinyllava_kv_cache_usage_perc{model_name="fake-vlm"}'), 0);
      assert.equal(sample(text, 'tinyllava_image_cache_hits_total{model_name="fake-vlm"}'), 0);
      assert.equal(sample(text, 'tinyllava_image_cache_bytes{model_name="fake-vlm"}'), 0);
      assert.equal(sample(text, 'tinyllava_prefix_cache_hits_total{model_name="fake-vlm"}'), 0);
    } finally {
      await t.close();
    }
  });

  test('every series of ours carries model_name, as vLLM\'s do', async () => {
    const t = await startApp({ engine: new FakeEngine() });
    try {
      const post = (payload: object) => t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload });
      assert.equal((await post({ messages: [imageMessage(dataUrl('photo-640x480.jpg'))] })).statusCode, 200);
      assert.equal((await post(chatBody({ temperature: 7 }))).statusCode, 400);
      const text = (await t.app.inject('/metrics')).body;
      const ours = text.split('\n').filter((l) => /^tinyllava_/.test(l) && !/^tinyllava_(process|nodejs)_/.test(l));
      assert.ok(ours.length > 50, `${ours.length} series`);
      for (const line of ours) assert.match(line, /^tinyllava_\w+\{(.*,)?model_name="fake-vlm"[,}]/, line);
    } finally {
      await t.close();
    }
  });

  test('before the model package is read: no engine series, errors counted with an empty model_name', async () => {
    const t = await startApp({ engine: null, phase: 'loading' });
    try {
      assert.equal((await t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody() })).statusCode, 503);
      const text = (await t.app.inject('/metrics')).body;
      assert.equal(sample(text, 'tinyllava_num_requests_running'), undefined);
      assert.doesNotMatch(text, /^tinyllava_num_requests_running\{/m);
      assert.equal(sample(text, 'tinyllava_request_errors_total{model_name="",type="server_error",code="model_not_ready"}'), 1);
    } finally {
      await t.close();
    }
  });

  test('process metrics are included, without model_name and without gauges named *_total', async () => {
    const app = await buildApp({ config: testConfig(), host: new EngineHost(new FakeEngine(), 'ready') });
    try {
      const text = (await app.inject('/metrics')).body;
      assert.match(text, /^tinyllava_process_cpu_user_seconds_total /m);
      assert.match(text, /^tinyllava_nodejs_eventloop_lag_seconds /m);
      const gauges = [...text.matchAll(/^# TYPE (\S+) gauge$/gm)].map((m) => m[1]);
      assert.ok(gauges.includes('tinyllava_nodejs_active_handles'), 'the by-type twins stay');
      assert.deepEqual(gauges.filter((name) => name.endsWith('_total')), []);
      assert.doesNotMatch(text, /^tinyllava_(process|nodejs)_.*model_name=/m);
    } finally {
      await app.close();
    }
  });

  test('the README lists every metric', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const names = new ApiMetrics(() => null, { processMetrics: false }).registry.getMetricsAsArray().map((m) => m.name);
    assert.deepEqual([...names].sort(), [...OURS].sort());
    for (const name of names) assert.ok(readme.includes(`\`${name}\``), `README mentions ${name}`);
  });
});
