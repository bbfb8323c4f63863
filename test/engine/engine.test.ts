// The engine end to end on the fixture packages: continuous batching gives the same tokens as
// one request at a time, seeded sampling is reproducible, stops / EOS / max_tokens / cancel /
// deadline end a stream as specified, and the main thread stays responsive.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createEngine, createEngineFromPort, type EngineOptions, type LoadedEngine } from '../../src/engine/engine.js';
import { EngineError } from '../../src/engine/errors.js';
import type { ModelPort } from '../../src/engine/model-port.js';
import type { GenerationEvent, GenerationRequest } from '../../src/engine/types.js';
import { caseMessages, goldenPackages, goldenPort, loadGolden, packageDir, request, runtimesFor, type GoldenCase } from '../support/golden.js';

const packages = goldenPackages();
const main = packages.includes('tiny-random-qwen2-siglip') ? 'tiny-random-qwen2-siglip' : packages[0];
const threads: EngineOptions = { warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1 };

interface Outcome {
  ids: number[];
  text: string;
  done: Extract<GenerationEvent, { type: 'done' }>;
  events: GenerationEvent[];
}

async function collect(engine: LoadedEngine, req: GenerationRequest, signal?: AbortSignal): Promise<Outcome> {
  const events: GenerationEvent[] = [];
  for await (const e of engine.generate(req, signal)) events.push(e);
  const done = events.at(-1);
  assert.ok(done && done.type === 'done', 'the stream ends with done');
  assert.equal(events.filter((e) => e.type === 'done').length, 1);
  const deltas = events.filter((e): e is Extract<GenerationEvent, { type: 'delta' }> => e.type === 'delta');
  return { ids: deltas.flatMap((d) => d.tokenIds), text: deltas.map((d) => d.text).join(''), done, events };
}

async function rejects(it: AsyncIterable<GenerationEvent>, code: EngineError['code']): Promise<void> {
  await assert.rejects(
    (async () => {
      for await (const _ of it) void _;
    })(),
    (err: unknown) => err instanceof EngineError && err.code === code,
  );
}

/** Waits until the scheduler has released every sequence (frees complete after `done`). */
async function settled(engine: LoadedEngine): Promise<void> {
  for (let i = 0; i < 100 && (engine.stats().running > 0 || (engine.stats().kvCache?.reservedBytes ?? 0) > 0); i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(engine.stats().running, 0);
}

const textOnly = (cases: GoldenCase[]): GoldenCase => cases.find((c) => c.name === 'text-only') ?? cases[0];

for (const name of packages) for (const runtime of await runtimesFor(name)) {
  describe(`${name}: continuous batching (${runtime} runtime)`, () => {
    const golden = loadGolden(name);
    let port: ModelPort;
    before(async () => {
      port = await goldenPort(name);
    });

    for (const prefillChunkTokens of [4096, 100]) {
      test(`every case at once equals the reference (prefill chunk ${prefillChunkTokens})`, async () => {
        const engine = createEngineFromPort(port, { ...threads, runtime, maxBatchSize: 16, prefillChunkTokens });
        try {
          await engine.ready();
          // A long request runs throughout, so that every case shares its decode steps with at
          // least one other sequence however far apart the cases arrive.
          const background = new AbortController();
          const long = collect(engine, request(caseMessages(textOnly(golden.cases)), { maxTokens: 1900 }), background.signal);
          const outcomes = await Promise.all(golden.cases.map((c) => collect(engine, request(caseMessages(c)))));
          background.abort();
          await long;
          outcomes.forEach((o, i) => assert.deepEqual(o.ids, golden.cases[i].greedy_ids, golden.cases[i].name));
          const s = engine.stats().steps;
          assert.ok(s.decodeRows > s.decodeSteps, `decode steps were batched (${s.decodeRows} rows in ${s.decodeSteps} steps)`);
          // (whether prefills share a step depends on arrival times; golden.test.ts batches them by hand)
          if (prefillChunkTokens < 1000) assert.ok(s.prefillSteps > golden.cases.length, 'prompts were prefilled in chunks');
          await settled(engine);
          assert.equal(engine.stats().kvCache?.reservedBytes, 0, 'every sequence freed its KV cache');
        } finally {
          await engine.close();
        }
      });
    }
  });
}

describe(`engine behaviour (${main ?? 'no fixtures'})`, { skip: main === undefined ? 'no fixture packages yet' : false }, () => {
  let port: ModelPort;
  let engine: LoadedEngine;
  let golden: ReturnType<typeof loadGolden>;
  let text: GoldenCase;
  let withImage: GoldenCase;

  before(async () => {
    golden = loadGolden(main);
    port = await goldenPort(main);
    engine = createEngineFromPort(port, { ...threads, maxBatchSize: 8 });
    await engine.ready();
    text = textOnly(golden.cases);
    withImage = golden.cases.find((c) => c.image_spans.length > 0) ?? golden.cases[0];
  });
  after(async () => {
    await engine?.close();
  });

  test('createEngine loads a package directory, warms up and serves', async () => {
    const fresh = await createEngine(packageDir(main), { intraOpNumThreads: 1, visionIntraOpNumThreads: 1 });
    try {
      await fresh.ready();
      assert.equal(fresh.executionProvider, 'cpu');
      assert.equal(fresh.model.id, JSON.parse(readFileSync(join(packageDir(main), 'manifest.json'), 'utf8')).name);
      assert.equal(fresh.model.numImageTokens, port.numImageTokens);
      const o = await collect(fresh, request(caseMessages(withImage)));
      assert.deepEqual(o.ids, withImage.greedy_ids);
      await assert.rejects(createEngine('/nonexistent-package'), (e: unknown) => e instanceof EngineError && e.code === 'model_error');
    } finally {
      await fresh.close();
    }
  });

  test('seeded sampling is reproducible, alone or batched with others', async () => {
    const sampling = { ...request([]).sampling, temperature: 0.9, topP: 0.95, topK: 40, seed: 1234 };
    const req = request(caseMessages(text), { sampling, maxTokens: 24 });
    const alone = await collect(engine, req);
    const again = await collect(engine, req);
    assert.deepEqual(again.ids, alone.ids);
    const [batched] = await Promise.all([
      collect(engine, req),
      collect(engine, request(caseMessages(withImage))),
      collect(engine, request(caseMessages(golden.cases.at(-1)!), { sampling: { ...sampling, seed: 5 } })),
    ]);
    assert.deepEqual(batched.ids, alone.ids);
    const other = await collect(engine, request(caseMessages(text), { sampling: { ...sampling, seed: 4321 }, maxTokens: 24 }));
    assert.notDeepEqual(other.ids, alone.ids);
  });

  test('max_tokens ends with length', async () => {
    const o = await collect(engine, request(caseMessages(text), { maxTokens: 5 }));
    assert.deepEqual(o.ids, text.greedy_ids.slice(0, 5));
    assert.equal(o.done.finishReason, 'length');
    assert.equal(o.done.usage.completionTokens, 5);
  });

  test('a stop string ends the stream and is not emitted, even across tokens', async () => {
    const full = await collect(engine, request(caseMessages(text)));
    // a stop string that starts in the middle of the answer
    const start = Math.floor(full.text.length / 2);
    const stop = full.text.slice(start, start + 3);
    const o = await collect(engine, request(caseMessages(text), { stop: [stop] }));
    assert.equal(o.text, full.text.slice(0, full.text.indexOf(stop)));
    assert.equal(o.done.finishReason, 'stop');
    assert.ok(o.done.usage.completionTokens < 32);
  });

  test('EOS ends the stream without emitting it unless ignore_eos', async () => {
    const eos = text.greedy_ids[6];
    const at = text.greedy_ids.indexOf(eos);
    const eosEngine = createEngineFromPort({ ...port, stopTokenIds: [eos] }, threads);
    try {
      const o = await collect(eosEngine, request(caseMessages(text), { ignoreEos: false }));
      assert.deepEqual(o.ids, text.greedy_ids.slice(0, at));
      assert.equal(o.done.finishReason, 'stop');
      assert.equal(o.done.usage.completionTokens, at + 1);
      const ignored = await collect(eosEngine, request(caseMessages(text), { ignoreEos: true }));
      assert.deepEqual(ignored.ids, text.greedy_ids);
    } finally {
      await eosEngine.close();
    }
  });

  test('logprobs: chosen token and top alternatives per token', async () => {
    const o = await collect(engine, request(caseMessages(withImage), { logprobs: 3, maxTokens: 8 }));
    const lps = o.events.flatMap((e) => (e.type === 'delta' ? (e.logprobs ?? []) : []));
    assert.equal(lps.length, 8);
    for (const lp of lps) {
      assert.equal(lp.top.length, 3);
      assert.ok(lp.logprob <= 0);
      assert.ok(lp.top[0].logprob >= lp.top[1].logprob && lp.top[1].logprob >= lp.top[2].logprob);
      assert.equal(lp.logprob, lp.top[0].logprob, 'greedy picks the most likely token');
      assert.deepEqual(lp.bytes, lp.top[0].bytes);
    }
  });

  test('timings and usage are reported', async () => {
    const missesBefore = engine.stats().imageCache!.misses;
    const o = await collect(engine, request(caseMessages(withImage), { maxTokens: 4 }));
    const t = o.done.timings;
    assert.equal(o.done.usage.promptTokens, withImage.input_length);
    assert.equal(o.done.usage.imageTokens, withImage.image_spans.reduce((n, [, len]) => n + len, 0));
    assert.ok(t.imagePreprocess > 0 && t.prefill > 0 && t.firstToken >= t.prefill);
    // an image seen before comes from the cache: no encoder time
    const missed = engine.stats().imageCache!.misses > missesBefore;
    assert.ok(missed ? t.visionEncoder > 0 : t.visionEncoder === 0, `visionEncoder ${t.visionEncoder}, missed ${missed}`);
  });

  test('context length: prompt + max_tokens over the context fails before any event', async () => {
    await rejects(engine.generate(request(caseMessages(text), { maxTokens: engine.model.maxContext })), 'context_length_exceeded');
  });

  test('abort cancels a running request within a step; the engine keeps serving', async () => {
    const controller = new AbortController();
    const events: GenerationEvent[] = [];
    for await (const e of engine.generate(request(caseMessages(text), { maxTokens: 1000 }), controller.signal)) {
      events.push(e);
      if (events.length === 2) controller.abort();
    }
    const done = events.at(-1)!;
    assert.equal(done.type, 'done');
    assert.equal(done.type === 'done' && done.finishReason, 'cancelled');
    assert.ok(done.type === 'done' && done.usage.completionTokens < 10, 'stopped within a few steps');
    // breaking out of the loop cancels too
    for await (const e of engine.generate(request(caseMessages(text), { maxTokens: 1000 }))) if (e.type === 'delta') break;
    const o = await collect(engine, request(caseMessages(text), { maxTokens: 3 }));
    assert.deepEqual(o.ids, text.greedy_ids.slice(0, 3));
    await settled(engine);
  });

  test('a passed deadline ends the stream with finish reason deadline', async () => {
    const o = await collect(engine, request(caseMessages(text), { maxTokens: 1500, deadlineMs: Date.now() + 30 }));
    assert.equal(o.done.finishReason, 'deadline');
    assert.ok(o.done.usage.completionTokens < 1500);
  });

  test('a full waiting queue fails fast with overloaded', async () => {
    const small = createEngineFromPort(port, { ...threads, maxBatchSize: 1, maxWaiting: 1 });
    try {
      const long = request(caseMessages(text), { maxTokens: 300 });
      // the first runs, the second waits, the third finds the queue full
      const first = small.generate(long)[Symbol.asyncIterator]();
      await first.next();
      const drainFirst = (async (): Promise<void> => {
        while (!(await first.next()).done);
      })();
      const second = collect(small, long);
      for (let i = 0; i < 200 && small.stats().waiting < 1; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(small.stats().waiting, 1, 'the second request is queued');
      const results = await Promise.allSettled([drainFirst, second, collect(small, long)]);
      const overloaded = results.filter(
        (r) => r.status === 'rejected' && r.reason instanceof EngineError && r.reason.code === 'overloaded',
      );
      assert.equal(overloaded.length, 1);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 2);
    } finally {
      await small.close();
    }
  });

  test('a request the KV cache cannot hold fails; one that must wait for room waits', async () => {
    const bytesPerPosition = 2 * port.text.numLayers * port.text.numKvHeads * port.text.headDim * 4;
    const capacity = (text.input_length + 40) * bytesPerPosition;
    const small = createEngineFromPort(port, { ...threads, kvCacheBytes: capacity });
    try {
      await rejects(small.generate(request(caseMessages(text), { maxTokens: 41 })), 'context_length_exceeded');
      // two requests that fit only one at a time: the second waits, then runs
      const [a, b] = await Promise.all([
        collect(small, request(caseMessages(text), { maxTokens: 32 })),
        collect(small, request(caseMessages(text), { maxTokens: 32 })),
      ]);
      assert.deepEqual(a.ids, text.greedy_ids);
      assert.deepEqual(b.ids, text.greedy_ids);
      assert.ok(Math.max(a.done.timings.queue, b.done.timings.queue) > 0, 'one of them waited');
    } finally {
      await small.close();
    }
  });

  test('the main thread keeps running timers while generation runs (ORT lives in workers)', async () => {
    // Long single decoder calls (whole-prompt prefills of image prompts) and vision encodes: if
    // they ran on this thread, a 1 ms interval could not fire while each call blocks it.
    const twoImages = golden.cases.reduce((a, c) => (c.input_length > a.input_length ? c : a));
    const bulky = createEngineFromPort(port, { ...threads, prefillChunkTokens: 4096 });
    try {
      await bulky.ready();
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const t0 = performance.now();
      const req = request(caseMessages(twoImages), { maxTokens: 2 });
      await Promise.all([collect(bulky, req), collect(bulky, req), collect(bulky, req)]);
      const elapsed = performance.now() - t0;
      clearInterval(timer);
      assert.ok(ticks >= elapsed / 4, `${ticks} ticks of a 1 ms timer in ${elapsed.toFixed(0)} ms`);
    } finally {
      await bulky.close();
    }
  });
});
