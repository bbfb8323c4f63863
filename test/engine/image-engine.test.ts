// The image cache and batched image encoding in the engine, on the real tiny package: a repeated
// image skips the vision encoder and still gives the reference tokens; with the cache off every
// request encodes; images of concurrent requests share encoder calls and give exactly what one
// call per request gives; requests refused at admission cost no encoder work.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createEngineFromPort, type EngineOptions, type LoadedEngine } from '../../src/engine/engine.js';
import { EngineError } from '../../src/engine/errors.js';
import { ImageEmbedder } from '../../src/engine/image-embedder.js';
import type { ModelPort } from '../../src/engine/model-port.js';
import { directRunner } from '../../src/engine/prepare.js';
import type { GenerationRequest } from '../../src/engine/types.js';
import { ModelRunner } from '../../src/runtime/model-runner.js';
import { caseMessages, fixturesDir, goldenPackages, goldenPort, loadGolden, request, runnerOptions, type GoldenCase } from '../support/golden.js';

const PACKAGE = 'tiny-random-qwen2-siglip';
const threads: EngineOptions = { warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1 };

async function greedyIds(engine: LoadedEngine, req: GenerationRequest): Promise<number[]> {
  const ids: number[] = [];
  for await (const e of engine.generate(req)) if (e.type === 'delta') ids.push(...e.tokenIds);
  return ids;
}

describe(`image cache and batched encoding (${PACKAGE})`, { skip: goldenPackages().includes(PACKAGE) ? false : 'no fixture package' }, () => {
  let port: ModelPort;
  let cases: GoldenCase[];
  let photo: GoldenCase;

  before(async () => {
    port = await goldenPort(PACKAGE);
    cases = loadGolden(PACKAGE).cases.filter((c) => c.image_spans.length > 0);
    photo = cases.find((c) => c.name === 'single-turn-photo')!;
  });

  test('a repeated image skips the vision encoder; the greedy tokens stay the reference', async () => {
    const engine = createEngineFromPort(port, threads);
    try {
      await engine.ready();
      assert.deepEqual(await greedyIds(engine, request(caseMessages(photo))), photo.greedy_ids);
      assert.deepEqual(engine.stats().imageEncoder, { calls: 1, images: 1 });
      assert.equal(engine.stats().imageCache?.misses, 1);
      const bytes = engine.stats().imageCache!.bytes;
      assert.equal(bytes, port.numImageTokens * port.text.hiddenSize * 4);

      // the same picture again, re-read from disk (new bytes, same pixels): a hit
      assert.deepEqual(await greedyIds(engine, request(caseMessages(photo))), photo.greedy_ids);
      // and in another conversation ('custom-system' asks about the same photo)
      const other = cases.find((c) => c.name === 'custom-system')!;
      assert.deepEqual(await greedyIds(engine, request(caseMessages(other))), other.greedy_ids);
      assert.deepEqual(engine.stats().imageEncoder, { calls: 1, images: 1 }, 'the encoder ran once');
      assert.deepEqual(engine.stats().imageCache, { hits: 2, misses: 1, bytes, entries: 1 });
    } finally {
      await engine.close();
    }
  });

  test('off with imageCacheBytes 0: every request encodes its image', async () => {
    const engine = createEngineFromPort(port, { ...threads, imageCacheBytes: 0 });
    try {
      await engine.ready();
      for (let i = 0; i < 2; i++) assert.deepEqual(await greedyIds(engine, request(caseMessages(photo))), photo.greedy_ids);
      assert.deepEqual(engine.stats().imageEncoder, { calls: 2, images: 2 });
      assert.equal(engine.stats().imageCache, undefined);
    } finally {
      await engine.close();
    }
  });

  test('concurrent requests: fewer encoder calls than requests, every answer the reference', async () => {
    const engine = createEngineFromPort(port, { ...threads, imageCacheBytes: 0, maxBatchSize: 16 });
    try {
      await engine.ready();
      const outcomes = await Promise.all(cases.map((c) => greedyIds(engine, request(caseMessages(c)))));
      outcomes.forEach((ids, i) => assert.deepEqual(ids, cases[i].greedy_ids, cases[i].name));
      const { calls, images } = engine.stats().imageEncoder;
      const expected = cases.reduce((n, c) => n + c.image_spans.length, 0);
      assert.equal(images, expected);
      assert.ok(calls < cases.length, `${calls} encoder calls for ${cases.length} requests`);
    } finally {
      await engine.close();
    }
  });

  test('requests refused for a full queue never reach the vision encoder', async () => {
    const engine = createEngineFromPort(port, { ...threads, imageCacheBytes: 0, maxBatchSize: 1, maxWaiting: 1 });
    try {
      await engine.ready();
      const six = cases.filter((c) => c.image_spans.length === 1).slice(0, 6);
      const results = await Promise.allSettled(six.map((c) => greedyIds(engine, request(caseMessages(c), { maxTokens: 2 }))));
      const refused = results.filter((r) => r.status === 'rejected' && r.reason instanceof EngineError && r.reason.code === 'overloaded');
      assert.equal(refused.length, 4, 'one batch slot + one waiting');
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 2);
      assert.equal(engine.stats().imageEncoder.images, 2, 'only the admitted requests were encoded');
    } finally {
      await engine.close();
    }
  });

  describe('batched embeddings equal one call per request, bit for bit', () => {
    let runner: ModelRunner;
    before(async () => {
      runner = await ModelRunner.start(runnerOptions(port));
    });
    after(async () => {
      await runner?.close();
    });

    test('images of 6 requests at once', async () => {
      const files = ['photo-640x480.jpg', 'grey-200x150.png', 'small-100x80.png', 'portrait-300x500.png', 'rgba-320x240.png', 'wide-1024x768.jpg'];
      const decode = (f: string) => port.decodeImage(new Uint8Array(readFileSync(join(fixturesDir, 'images', f))));
      const direct = directRunner(runner);
      const alone: Float32Array[] = [];
      for (const f of files) alone.push((await direct.embedImages([await decode(f)])).embeds[0].slice());

      const embedder = new ImageEmbedder(runner, { cacheBytes: 0, maxBatchImages: 8, namespace: 'test' });
      const decoded = await Promise.all(files.map(decode));
      const batched = await Promise.all(decoded.map((img) => embedder.embedImages([img])));
      assert.ok(embedder.encoderCounters.calls < files.length, `${embedder.encoderCounters.calls} calls`);
      const bytes = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
      batched.forEach((b, i) => assert.ok(bytes(b.embeds[0]).equals(bytes(alone[i])), files[i]));
    });
  });
});
