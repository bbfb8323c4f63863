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

// ---- the prefix cache (runner side: src/runtime/prefix-cache.ts) as the scheduler drives it ----

/** Runs prompts one after another on one scheduler; returns each one's tokens and cached positions. */
async function inTurn(runner: FakeRunner, prefix: boolean, turns: { prompt: number[]; maxTokens: number }[]) {
  const s = new Scheduler(runner, { ...limits, prefillChunkTokens: 8, prefixBlockPositions: prefix ? BLOCK : null });
  const out: { ids: number[]; cached: number }[] = [];
  for (const t of turns) {
    const seq = sequence(t.prompt, t.maxTokens);
    s.submit(seq);
    const { ids, done } = await drain(seq);
    await new Promise((r) => setImmediate(r)); // the release after done
    out.push({ ids, cached: done.usage.cachedTokens });
  }
  await s.close();
  return { out, counters: s.prefixCounters };
}

test('prefix cache: a follow-up prompt loads the earlier KV and gets the tokens it gets without it', async () => {
  const first = { prompt: prompts[2], maxTokens: 6 };
  const off = await inTurn(new FakeRunner(1000), false, [first]);
  // turn 2 repeats turn 1's prompt and answer; another prompt shares only its first 5 positions
  const turn2 = { prompt: [...prompts[2], ...off.out[0].ids, 2, 3], maxTokens: 5 };
  const partial = { prompt: [...prompts[2].slice(0, 5), 1, 1, 1, 1], maxTokens: 5 };
  const turns = [first, turn2, partial, first];
  const without = await inTurn(new FakeRunner(1000), false, turns);
  const runner = new FakeRunner(1000, 1000);
  const withCache = await inTurn(runner, true, turns);
  assert.deepEqual(withCache.out.map((o) => o.ids), without.out.map((o) => o.ids));
  // 11 + 6 answer tokens, 5 of them fed back: 16 positions = 4 blocks stored; turn 2 (19
  // positions) finds them all; the partial prompt its first block; the repeat 8 of its 11 (never
  // the last position).
  assert.deepEqual(withCache.out.map((o) => o.cached), [0, 16, 4, 8]);
  assert.deepEqual(without.out.map((o) => o.cached), [0, 0, 0, 0]);
  assert.deepEqual(withCache.counters, { queries: 11 + 19 + 9 + 11, hits: 16 + 4 + 8 });
  assert.deepEqual(without.counters, { queries: 0, hits: 0 });
  // only the rest was fed: turn 2's prefill carried 3 positions
  const turn2Seq = runner.fed.find((rows) => rows.some(([, n]) => n === 3));
  assert.ok(turn2Seq, `a 3-position prefill (${JSON.stringify(runner.fed.filter((r) => r[0][1] > 1))})`);
  assert.equal(runner.cache.usage().sequences, 0);
});

test('prefix cache: stored blocks never make a sequence wait or fail that an empty cache admits', async () => {
  // 17 positions of KV in all: turn 1 (11 + 6) leaves 16 positions stored; the next prompt
  // needs the whole budget again and is admitted, as with no prefix cache
  const turns = [
    { prompt: prompts[2], maxTokens: 6 },
    { prompt: prompts[0], maxTokens: 11 },
  ];
  const runner = new FakeRunner(17, 17);
  const withCache = await inTurn(runner, true, turns);
  const without = await inTurn(new FakeRunner(17), false, turns);
  assert.deepEqual(withCache.out, without.out);
  // turn 1's blocks gave way; turn 2 left its own 6 + 10 fed positions: 4 blocks
  assert.equal(runner.cache.usage().storedBlocks, 4);
  assert.equal(runner.prefix.allocate(999, 11, sequence(prompts[2], 1).lookupKeys(BLOCK)), 0);
});

test('prefix cache: a failed sequence stores nothing', async () => {
  const runner = new FakeRunner(1000, 1000);
  const s = new Scheduler(runner, { ...limits, prefixBlockPositions: BLOCK });
  const a = sequence(prompts[2], 5);
  s.submit(a);
  runner.failNextStep = true;
  await assert.rejects(drain(a), (e: unknown) => e instanceof EngineError && e.code === 'model_error');
  await s.close();
  assert.equal(runner.cache.usage().storedBlocks, 0);
});
