// The model runner on a fixture package, on each runtime: load-time checks with clear errors,
// the execution provider choice, KV admission, that a long decoder call does not block the main
// thread, and that the native runtime hands nothing but the logits to JS per decode step.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { ModelRunner, type RunnerOptions } from '../../src/runtime/model-runner.js';
import { cudaProviderLibrary, resolveExecutionProvider } from '../../src/runtime/execution-provider.js';
import { KvCacheFullError } from '../../src/runtime/kv-cache.js';
import { goldenPackages, goldenPort, runnerOptions, RUNTIMES } from '../support/golden.js';
import type { ModelPort } from '../../src/engine/model-port.js';

const packages = goldenPackages();
const name = packages.includes('tiny-random-qwen2-siglip') ? 'tiny-random-qwen2-siglip' : packages[0];
const cudaPresent = existsSync(cudaProviderLibrary());

test('CUDA without its provider library: a clear error, or CPU when fallback is configured', { skip: cudaPresent && 'CUDA provider present' }, () => {
  assert.throws(() => resolveExecutionProvider('cuda', false), /libonnxruntime_providers_cuda\.so, which is missing/);
  const choice = resolveExecutionProvider('cuda', true);
  assert.equal(choice.provider, 'cpu');
  assert.match(choice.fallbackReason ?? '', /missing/);
  assert.deepEqual(resolveExecutionProvider('cpu', false), { provider: 'cpu', fallbackReason: null });
});

for (const runtime of RUNTIMES)
describe(`model runner (${name ?? 'no fixtures'}, ${runtime} runtime)`, { skip: name === undefined ? 'no fixture packages yet' : false }, () => {
  let port: ModelPort;
  let options: RunnerOptions;
  let runner: ModelRunner;

  before(async () => {
    port = await goldenPort(name);
    options = runnerOptions(port, runtime);
    runner = await ModelRunner.start(options);
    assert.equal(runner.runtime, runtime, runner.runtimeFallbackReason ?? '');
  });
  after(async () => {
    await runner?.close();
  });

  test('a decoder that does not match num_layers fails at load, naming the file', async () => {
    await assert.rejects(
      ModelRunner.start({ ...options, decoder: { ...port.text, numLayers: port.text.numLayers + 1 } }),
      (err: Error) =>
        err.message.includes(port.graphs.decoder) &&
        err.message.includes(`num_layers=${port.text.numLayers + 1}`) &&
        err.message.includes(`missing inputs past_key_values.${port.text.numLayers}.key`),
    );
  });

  test('a missing graph file fails at load, naming it', async () => {
    const missing = port.graphs.connector.replace(/\.onnx$/, '-missing.onnx');
    await assert.rejects(
      ModelRunner.start({ ...options, graphs: { ...port.graphs, connector: missing } }),
      (err: Error) => err.message.includes(missing) && err.message.includes('connector'),
    );
  });

  test('CUDA fallback to CPU when configured', { skip: cudaPresent && 'CUDA provider present' }, async () => {
    const r = await ModelRunner.start({ ...options, executionProvider: 'cuda', cudaFallbackToCpu: true, separateVisionWorker: false });
    try {
      assert.equal(r.executionProvider, 'cpu');
      assert.ok(r.fallbackReason);
    } finally {
      await r.close();
    }
  });

  test('allocate enforces the byte capacity; free returns it', async () => {
    const bytesPerPosition = 2 * port.text.numLayers * port.text.numKvHeads * port.text.headDim * 4;
    const positions = Math.floor((1 << 26) / bytesPerPosition);
    const { usage, cachedPositions } = await runner.allocate(100, positions);
    assert.equal(usage.reservedBytes, positions * bytesPerPosition);
    assert.equal(cachedPositions, 0);
    await assert.rejects(runner.allocate(101, 1), KvCacheFullError);
    assert.equal((await runner.free(100)).reservedBytes, 0);
  });

  test('steps: embeddings or token ids, rows joining and leaving, logits of the last position', async () => {
    const D = port.text.hiddenSize;
    const ids = [5, 6, 7, 8];
    const embeds = await runner.embedTokens(ids);
    assert.equal(embeds.length, ids.length * D);
    // the same 4 tokens sent as embeddings (seq 1) and as ids (seq 2) give the same logits
    await runner.allocate(1, 8);
    await runner.allocate(2, 8);
    const a = await runner.step([{ seqId: 1, embeds: embeds.slice() }]);
    const b = await runner.step([{ seqId: 2, ids: Int32Array.from(ids) }]);
    assert.equal(a.logits.length, port.text.vocabSize);
    for (let i = 0; i < a.logits.length; i++) assert.ok(Math.abs(a.logits[i] - b.logits[i]) < 1e-5);
    // then one decode step for both, batched: equal to each other, cache lengths 5
    const c = await runner.step([
      { seqId: 1, ids: Int32Array.of(9) },
      { seqId: 2, ids: Int32Array.of(9) },
    ]);
    const V = c.vocabSize;
    for (let i = 0; i < V; i++) assert.ok(Math.abs(c.logits[i] - c.logits[V + i]) < 1e-5);
    assert.equal(c.usage.usedBytes, 10 * 2 * port.text.numLayers * port.text.numKvHeads * port.text.headDim * 4);
    await runner.free(1);
    await runner.free(2);
    await assert.rejects(runner.step([{ seqId: 1, ids: Int32Array.of(1) }]), /unknown sequence 1/);
  });

  test('per decode step, only the logits rows cross into JS on the native runtime (the KV cache stays native)', async () => {
    const V = port.text.vocabSize;
    const B = 3;
    for (let s = 0; s < B; s++) await runner.allocate(200 + s, 40);
    await runner.step([0, 1, 2].map((s) => ({ seqId: 200 + s, ids: Int32Array.from({ length: 5 + s }, (_, i) => 3 + i) })));
    const before = await runner.counters();
    const steps = 6;
    for (let t = 0; t < steps; t++) await runner.step([0, 1, 2].map((s) => ({ seqId: 200 + s, ids: Int32Array.of(10 + t) })));
    const after = await runner.counters();
    for (let s = 0; s < B; s++) await runner.free(200 + s);
    const perStep = (after.bytesToJs - before.bytesToJs) / steps;
    assert.equal(after.steps - before.steps, steps);
    assert.equal(after.bytesFromJs - before.bytesFromJs, steps * B * 4, 'one int32 token id per row per step went in');
    const logitsBytes = B * V * 4;
    const presentsBytes = B * 2 * port.text.numLayers * port.text.numKvHeads * port.text.headDim * 4; // one new position per row
    if (runtime === 'native') {
      assert.equal(perStep, logitsBytes, 'bytes into JS per decode step = the logits rows');
      assert.equal(after.hostToDeviceBytes, 0); // CPU: no device
    } else {
      // The js runtime's binding copies every output into JS: embeddings, logits and presents.
      assert.equal(perStep, logitsBytes + presentsBytes + B * port.text.hiddenSize * 4);
    }
  });

  test('a long decoder call leaves the main thread free (1 ms timer keeps firing)', async () => {
    const D = port.text.hiddenSize;
    const T = Math.min(1500, port.maxContext - 1);
    const embeds = Float32Array.from({ length: T * D }, (_, i) => Math.sin(i) * 0.1);
    await runner.allocate(7, T);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = performance.now();
    await runner.step([{ seqId: 7, embeds }]);
    const elapsed = performance.now() - t0;
    clearInterval(timer);
    await runner.free(7);
    assert.ok(ticks >= elapsed / 4, `${ticks} ticks in a ${elapsed.toFixed(1)} ms decoder call`);
  });
});
