// The scheduler without ONNX Runtime: a fake runner with the JS KV cache and the reference
// decoder of test/support, so that joining, leaving, KV admission and failures are tested
// deterministically and fast.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { JsKvCache, type KvCacheUsage } from '../../src/runtime/kv-cache.js';
import { appendPresents, buildDecoderFeeds, type StepRow } from '../../src/runtime/batch-step.js';
import type { AllocateResult, StepResult, StepRowRequest } from '../../src/runtime/model-runner.js';
import { PrefixCache } from '../../src/runtime/prefix-cache.js';
import { Scheduler, type StepRunner } from '../../src/engine/scheduler.js';
import { Sequence, type PreparedPrompt } from '../../src/engine/sequence.js';
import { EngineError } from '../../src/engine/errors.js';
import type { ModelPort } from '../../src/engine/model-port.js';
import type { GenerationEvent } from '../../src/engine/types.js';
import { REF, referenceDecoder } from '../support/reference-decoder.js';
import { request } from '../support/golden.js';

const { D, V } = REF;
const bytesPerPosition = 2 * REF.L * REF.H * REF.Dh * 4;
const BLOCK = 4; // prefix-cache block positions: small, so that the fake's short prompts span several

function embed(id: number): Float32Array {
  return Float32Array.from({ length: D }, (_, i) => Math.cos(id * 1.9 + i * 0.61));
}

class FakeRunner implements StepRunner {
  readonly cache: JsKvCache;
  readonly prefix: PrefixCache;
  failNextStep = false;
  steps: number[][] = []; // seq ids per step
  /** Rows' positions fed per step: [seqId, count] */
  fed: [number, number][][] = [];
  /** prefixPositions: the prefix cache's capacity (default 0: off), sharing the KV capacity. */
  constructor(capacityPositions: number, prefixPositions = 0) {
    this.cache = new JsKvCache({ numLayers: REF.L, numKvHeads: REF.H, headDim: REF.Dh }, capacityPositions * bytesPerPosition);
    this.prefix = new PrefixCache(this.cache, { capacityBytes: prefixPositions * bytesPerPosition, blockPositions: BLOCK });
  }
  async allocate(seqId: number, maxPositions: number, blockKeys?: string[]): Promise<AllocateResult> {
    const cachedPositions = this.prefix.allocate(seqId, maxPositions, blockKeys);
    return { usage: this.cache.usage(), cachedPositions };
  }
  async free(seqId: number, blockKeys?: string[]): Promise<KvCacheUsage> {
    this.prefix.release(seqId, blockKeys);
    return this.cache.usage();
  }
  async step(rows: StepRowRequest[]): Promise<StepResult> {
    await new Promise((r) => setImmediate(r)); // a step takes time: others may arrive meanwhile
    this.steps.push(rows.map((r) => r.seqId));
    this.fed.push(rows.map((r) => [r.seqId, r.embeds ? r.embeds.length / D : r.ids!.length]));
    if (this.failNextStep) {
      this.failNextStep = false;
      throw new Error('boom');
    }
    const stepRows: StepRow[] = rows.map((r) => {
      const embeds = r.embeds ?? Float32Array.from([...r.ids!].flatMap((id) => [...embed(id)]));
      return { seqId: r.seqId, embeds, count: embeds.length / D };
    });
    const batch = buildDecoderFeeds(stepRows, this.cache, D);
    const out = referenceDecoder(batch.feeds);
    appendPresents(stepRows, out, batch, this.cache);
    return { logits: out.logits.data, vocabSize: V, usage: this.cache.usage() };
  }
}

const port = {
  maxContext: 64,
  stopTokenIds: [] as number[],
  createDetokenizer: () => ({ push: (id: number) => 'abcde'[id], flush: () => '' }),
  tokenBytes: (id: number) => [97 + id],
} as unknown as ModelPort;

let nextId = 1;
function sequence(promptIds: number[], maxTokens: number): Sequence {
  const prompt: PreparedPrompt = {
    embeds: Float32Array.from(promptIds.flatMap((id) => [...embed(id)])),
    length: promptIds.length,
    ids: promptIds,
    imageTokens: 0,
    timings: { imagePreprocess: 0, visionEncoder: 0 },
  };
  return new Sequence(nextId++, request([], { maxTokens }), prompt, port, performance.now());
}

async function drain(seq: Sequence): Promise<{ ids: number[]; done: Extract<GenerationEvent, { type: 'done' }> }> {
  const ids: number[] = [];
  let done: Extract<GenerationEvent, { type: 'done' }> | null = null;
  for await (const e of seq.events) {
    if (e.type === 'delta') ids.push(...e.tokenIds);
    else done = e;
  }
  return { ids, done: done! };
}

const limits = { maxBatchSize: 8, maxWaiting: 8, prefillChunkTokens: 64 };
const prompts = [
  [1, 2, 3, 4, 0, 1],
  [3, 3],
  [4, 0, 2, 1, 1, 2, 3, 0, 4, 4, 2],
];

async function alone(promptIds: number[], maxTokens: number): Promise<number[]> {
  const s = new Scheduler(new FakeRunner(1000), limits);
  const seq = sequence(promptIds, maxTokens);
  s.submit(seq);
  const { ids } = await drain(seq);
  await s.close();
  return ids;
}

test('sequences joining and leaving between steps get the tokens they get alone', async () => {
  const expected = await Promise.all(prompts.map((p, i) => alone(p, 6 + 3 * i)));
  const runner = new FakeRunner(1000);
  const s = new Scheduler(runner, { ...limits, prefillChunkTokens: 4 }); // chunked prefill too
  const seqs = prompts.map((p, i) => sequence(p, 6 + 3 * i));
  const results: Promise<{ ids: number[] }>[] = [];
  for (const seq of seqs) {
    s.submit(seq);
    results.push(drain(seq));
    await new Promise((r) => setImmediate(r)); // the next one arrives a step later
    await new Promise((r) => setImmediate(r));
  }
  const got = await Promise.all(results);
  got.forEach((g, i) => assert.deepEqual(g.ids, expected[i], `sequence ${i}`));
  assert.ok(runner.steps.some((ids) => ids.length > 1), 'some steps were batched');
  await s.close();
  assert.equal(runner.cache.usage().sequences, 0);
});

test('a sequence that does not fit the KV cache waits for one to finish', async () => {
  const runner = new FakeRunner(prompts[0].length + 6);
  const s = new Scheduler(runner, limits);
  const a = sequence(prompts[0], 6);
  const b = sequence(prompts[0], 6);
  s.submit(a);
  s.submit(b);
  const [ra, rb] = await Promise.all([drain(a), drain(b)]);
  assert.deepEqual(ra.ids, rb.ids);
  // b only started after a had released its reservation
  const firstB = runner.steps.findIndex((ids) => ids.includes(b.seqId));
  const lastA = runner.steps.findLastIndex((ids) => ids.includes(a.seqId));
  assert.ok(firstB > lastA);
  // one that can never fit fails with context_length_exceeded
  const big = sequence(prompts[2], 40);
  s.submit(big);
  await assert.rejects(drain(big), (e: unknown) => e instanceof EngineError && e.code === 'context_length_exceeded');
  await s.close();
});

test('a failed step fails its rows with model_error; the scheduler keeps serving', async () => {
  const runner = new FakeRunner(1000);
  const s = new Scheduler(runner, limits);
  const a = sequence(prompts[1], 5);
  s.submit(a);
  runner.failNextStep = true;
  await assert.rejects(drain(a), (e: unknown) => e instanceof EngineError && e.code === 'model_error');
  assert.equal(runner.cache.usage().sequences, 0, 'its KV cache was freed');
  const b = sequence(prompts[1], 5);
  s.submit(b);
  assert.deepEqual((await drain(b)).ids, await alone(prompts[1], 5));
  await s.close();
});

test('cancelling queued and running sequences; close cancels the rest', async () => {
  const runner = new FakeRunner(1000);
  const s = new Scheduler(runner, { ...limits, maxBatchSize: 1 });
  const running = sequence(prompts[0], 50);
  const queued = sequence(prompts[1], 50);
  s.submit(running);
  s.submit(queued);
  const rq = drain(queued);
  queued.stopRequested = 'cancelled';
  s.notify();
  const q = await rq;
  assert.equal(q.done.finishReason, 'cancelled');
  assert.equal(q.done.usage.completionTokens, 0);
  const rr = drain(running);
  await new Promise((r) => setTimeout(r, 5));
  await s.close();
  const r = await rr;
  assert.equal(r.done.finishReason, 'cancelled');
  assert.ok(r.done.usage.completionTokens < 50);
  assert.throws(() => s.submit(sequence(prompts[1], 1)), (e: unknown) => e instanceof EngineError && e.code === 'shutting_down');
  assert.equal(runner.cache.usage().sequences, 0);
});

test('admission: first come first served under a full batch; the queue holds maxWaiting beyond the free slots', async () => {
  const runner = new FakeRunner(1000);
  const s = new Scheduler(runner, { ...limits, maxBatchSize: 1, maxWaiting: 2 });
  const seqs = [0, 1, 2].map((i) => sequence(prompts[i], 4));
  for (const seq of seqs) s.submit(seq);
  const overloaded = (e: unknown): boolean => e instanceof EngineError && e.code === 'overloaded';
  assert.throws(() => s.submit(sequence(prompts[1], 4)), overloaded, 'one slot + two waiting: the fourth is refused');
  await Promise.all(seqs.map(drain));
  const firstStep = seqs.map((seq) => runner.steps.findIndex((ids) => ids.includes(seq.seqId)));
  assert.deepEqual([...firstStep].sort((a, b) => a - b), firstStep, `admitted in arrival order (first steps ${firstStep})`);
  await s.close();

  // MAX_WAITING 0: no queue, but the free batch slots still take requests
  const noQueue = new Scheduler(new FakeRunner(1000), { ...limits, maxBatchSize: 2, maxWaiting: 0 });
  const a = sequence(prompts[0], 4);
  const b = sequence(prompts[1], 4);
  noQueue.submit(a);
  noQueue.submit(b);
  assert.throws(() => noQueue.submit(sequence(prompts[1], 4)), overloaded);
  await Promise.all([drain(a), drain(b)]);
  await noQueue.close();
});

test('a deadline before the first token fails with deadline_exceeded; after it, ends the answer with deadline', async () => {
  const runner = new FakeRunner(1000);
  const s = new Scheduler(runner, { ...limits, maxBatchSize: 1 });
  const running = sequence(prompts[0], 50);
  const queued = sequence(prompts[1], 50);
  s.submit(running);
  s.submit(queued);
  const rq = drain(queued);
  queued.stopRequested = 'deadline';
  s.notify();
  await assert.rejects(rq, (e: unknown) => e instanceof EngineError && e.code === 'deadline_exceeded');
  const rr = drain(running);
  while (running.generated.length < 3) await new Promise((r) => setImmediate(r));
  running.stopRequested = 'deadline';
  s.notify();
  const r = await rr;
  assert.equal(r.done.finishReason, 'deadline');
  assert.ok(r.done.usage.completionTokens >= 3 && r.done.usage.completionTokens < 50);
  await s.close();
  assert.equal(runner.cache.usage().sequences, 0, 'both reservations were freed');
});
