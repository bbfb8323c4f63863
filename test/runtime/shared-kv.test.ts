// The native runtime's two decoder forms against the js runtime, on the tiny decoders of
// test/fixtures/shared-kv/ (made by test/support/make_shared_kv_fixture.py, same weights in
// every file): the `shared_kv` form (GroupQueryAttention over one buffer that is both past and
// present, rotary inside the op or outside on position_ids) and the `standard` form through the
// native runtime must give the logits the js runtime gives for the standard graph, step for
// step, through mixed prefill and decode rows, chunked prefill, rows leaving and joining, and
// block growth; also with float16 KV buffers (2-byte blocks). Then the prefix-cache primitives
// (saveBlock / loadBlock / dropBlock), on both backends.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RuntimeBackend } from '../../src/runtime/backend.js';
import { onnxruntimeNodeLibrary } from '../../src/runtime/execution-provider.js';
import { loadJsBackend } from '../../src/runtime/js-backend.js';
import { KvCacheFullError, type KvCache } from '../../src/runtime/kv-cache.js';
import { loadNativeBackend } from '../../src/runtime/native-backend.js';
import { NativeKvCache } from '../../src/runtime/native-kv-cache.js';
import type { RuntimeKind, StepRowRequest, WorkerInit } from '../../src/runtime/worker-protocol.js';

const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/shared-kv');
const dims = JSON.parse(readFileSync(join(dir, 'dims.json'), 'utf8')) as { numLayers: number; hiddenSize: number; numKvHeads: number; headDim: number; vocabSize: number };
const V = dims.vocabSize;

function init(runtime: RuntimeKind, decoder: string, kvCacheBytes = 1 << 24): WorkerInit {
  return {
    runtime,
    native: { library: onnxruntimeNodeLibrary(), preload: [], cudaRuntime: null },
    graphs: { embed_tokens: join(dir, 'embed_tokens.onnx'), decoder: join(dir, `${decoder}.onnx`) },
    session: { executionProvider: 'cpu', deviceId: 0, intraOpNumThreads: 1, allowSpinning: false, graphOptimizationLevel: 'all' },
    decoder: { numLayers: dims.numLayers, numKvHeads: dims.numKvHeads, headDim: dims.headDim, hiddenSize: dims.hiddenSize, vocabSize: V, kvCacheBytes },
  };
}

const load = (runtime: RuntimeKind, decoder: string, bytes?: number): Promise<RuntimeBackend> =>
  (runtime === 'js' ? loadJsBackend : loadNativeBackend)(init(runtime, decoder, bytes));

const ids = (n: number, seed: number): Int32Array => Int32Array.from({ length: n }, (_, i) => (seed * 7 + i * 13) % V);

function argmax(logits: Float32Array, b: number): number {
  let best = 0;
  for (let v = 1; v < V; v++) if (logits[b * V + v] > logits[b * V + best]) best = v;
  return best;
}

function assertClose(got: Float32Array, want: Float32Array, what: string, tolerance = 1e-4): void {
  assert.equal(got.length, want.length, what);
  const scale = Math.max(1, ...want.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  assert.ok(worst <= tolerance * scale, `${what}: max |diff| ${worst} over max |logit| ${scale}`);
}

/**
 * float16 KV buffers (the exporter's fp16 shared_kv packages): q, k and v are rounded to 11 bits
 * for the op, which moved these logits (up to 62) by 0.4e-3 to 7.4e-3 of the largest over the
 * script. A block read at the wrong place or with the wrong element size moves them by far more.
 */
const FP16_KV = 'decoder_gqa_positions_fp16';
const toleranceOf = (decoder: string): number => (decoder === FP16_KV ? 2e-2 : 1e-4);

/**
 * A scripted run: each entry is one step; `next` means "the previous step's argmax of this
 * row" (from the reference run), so that both runtimes are fed the same tokens.
 */
type Op = { allocate: [number, number] } | { free: number } | { step: { seq: number; ids?: Int32Array; embedsOf?: Int32Array; next?: true }[] };

const script: Op[] = [
  { allocate: [1, 200] },
  { allocate: [2, 200] },
  { allocate: [3, 200] },
  { allocate: [4, 200] },
  // prefill rows of different lengths in one step, one of them as ready embeddings, one single-position
  { step: [{ seq: 1, ids: ids(60, 1) }, { seq: 2, embedsOf: ids(3, 2) }, { seq: 3, ids: ids(1, 3) }] },
  // a chunked prefill (two chunks) while the others decode
  { step: [{ seq: 4, ids: ids(5, 4) }, { seq: 1, next: true }, { seq: 2, next: true }, { seq: 3, next: true }] },
  { step: [{ seq: 1, next: true }, { seq: 4, ids: ids(4, 5) }, { seq: 2, next: true }, { seq: 3, next: true }] },
  ...Array.from({ length: 3 }, () => ({ step: [1, 2, 3, 4].map((seq) => ({ seq, next: true as const })) })),
  // a row in the middle leaves: the rest no longer form a run of rows
  { free: 2 },
  ...Array.from({ length: 2 }, () => ({ step: [1, 3, 4].map((seq) => ({ seq, next: true as const })) })),
  // a request joins while the others decode; then decode past 64 positions (block growth)
  { allocate: [5, 200] },
  { step: [{ seq: 3, next: true }, { seq: 5, ids: ids(9, 6) }, { seq: 1, next: true }, { seq: 4, next: true }] },
  ...Array.from({ length: 6 }, () => ({ step: [1, 3, 4, 5].map((seq) => ({ seq, next: true as const })) })),
  { free: 1 },
  { free: 3 },
  { free: 4 },
  { free: 5 },
];

/** Runs the script; with `reference` feeds its argmax tokens, else picks them itself. */
async function play(backend: RuntimeBackend, reference?: Float32Array[]): Promise<Float32Array[]> {
  const d = backend.decoder!;
  const out: Float32Array[] = [];
  let last = new Map<number, number>();
  for (const op of script) {
    if ('allocate' in op) d.cache.allocate(...op.allocate);
    else if ('free' in op) d.cache.free(op.free);
    else {
      const rows: StepRowRequest[] = [];
      for (const r of op.step) {
        if (r.next) rows.push({ seqId: r.seq, ids: Int32Array.of(last.get(r.seq)!) });
        else if (r.embedsOf) {
          const e = await backend.run('embed_tokens', { input_ids: { type: 'int64', data: BigInt64Array.from(r.embedsOf, BigInt), dims: [1, r.embedsOf.length] } });
          rows.push({ seqId: r.seq, embeds: e.inputs_embeds.data as Float32Array });
        } else rows.push({ seqId: r.seq, ids: r.ids });
      }
      const { logits } = await d.step(rows);
      const source = reference ? reference[out.length] : logits;
      last = new Map(op.step.map((r, b) => [r.seq, argmax(source, b)]));
      out.push(logits);
    }
  }
  assert.equal(d.cache.usage().reservedBytes, 0);
  return out;
}

describe('shared_kv and standard decoders on the native runtime equal the js runtime', () => {
  let reference: Float32Array[];
  before(async () => {
    reference = await play(await load('js', 'decoder_standard'));
  });

  for (const decoder of ['decoder_gqa_rotary', 'decoder_gqa_positions', FP16_KV, 'decoder_standard']) {
    test(decoder, async () => {
      const backend = await load('native', decoder);
      const form = decoder === 'decoder_standard' ? 'standard' : 'shared_kv';
      assert.equal((backend.decoder!.cache as NativeKvCache).constructor, NativeKvCache);
      const got = await play(backend, reference);
      assert.equal(got.length, reference.length);
      got.forEach((g, i) => assertClose(g, reference[i], `${decoder} (${form}) step ${i}`, toleranceOf(decoder)));
      const c = backend.decoder!.counters();
      assert.equal(c.steps, reference.length);
      // shared_kv runs each multi-position row alone: more decoder runs than steps
      if (form === 'shared_kv') assert.ok(c.decoderRuns > c.steps);
      else assert.equal(c.decoderRuns, c.steps);
    });
  }

  test('the js runtime refuses a shared_kv decoder, naming the runtime that reads it', async () => {
    await assert.rejects(load('js', 'decoder_gqa_rotary'), /shared_kv form.*--runtime native/);
  });
});

// The prefix-cache primitives are part of the KvCache contract: the same tests on both backends.
for (const [runtime, decoder] of [['native', 'decoder_gqa_rotary'], ['native', FP16_KV], ['native', 'decoder_standard'], ['js', 'decoder_standard']] as const) {
  describe(`KV cache prefix primitives (${runtime} runtime, ${decoder})`, () => {
    let backend: RuntimeBackend;
    let cache: KvCache;
    const bytesPerPosition = 2 * dims.numLayers * dims.numKvHeads * dims.headDim * (decoder === FP16_KV ? 2 : 4);
    before(async () => {
      backend = await load(runtime, decoder, 200 * bytesPerPosition);
      cache = backend.decoder!.cache;
      assert.equal(cache instanceof NativeKvCache, runtime === 'native');
      if (cache instanceof NativeKvCache) assert.equal(cache.bytesPerPosition, bytesPerPosition, 'the KV element size sets the budget');
    });
    after(() => backend.release());

    test('a stored block loaded into another sequence continues exactly like the original', async () => {
      const prompt = ids(40, 9);
      cache.allocate(1, 41);
      const whole = await backend.decoder!.step([{ seqId: 1, ids: prompt }]);
      const handle = cache.saveBlock(1, 0, 32);
      assert.deepEqual([cache.usage().storedBytes, cache.usage().storedBlocks], [32 * bytesPerPosition, 1]);
      assert.equal(cache.usage().reservedBytes, 41 * bytesPerPosition);
      cache.allocate(2, 41);
      cache.loadBlock(2, handle);
      assert.equal(cache.length(2), 32);
      const rest = await backend.decoder!.step([{ seqId: 2, ids: prompt.slice(32) }]);
      assertClose(rest.logits, whole.logits, 'prefix loaded + the rest of the prompt');
      const next = await backend.decoder!.step([
        { seqId: 1, ids: Int32Array.of(5) },
        { seqId: 2, ids: Int32Array.of(5) },
      ]);
      assertClose(next.logits.subarray(V), next.logits.subarray(0, V), 'the next step of both');
      cache.dropBlock(handle);
      assert.deepEqual([cache.usage().storedBytes, cache.usage().storedBlocks], [0, 0]);
      assert.throws(() => cache.dropBlock(handle), /unknown stored block/);
      cache.free(1);
      cache.free(2);
    });

    test('loads stay within the reservation; saves within the byte budget', () => {
      cache.allocate(3, 20);
      assert.throws(() => cache.saveBlock(3, 0, 4), /cannot save positions \[0, 4\) of sequence 3, which has 0/);
      cache.free(3);
      cache.allocate(4, 150);
      cache.allocate(5, 10);
      assert.throws(() => cache.loadBlock(5, 12345), /unknown stored block 12345/);
      assert.throws(() => cache.allocate(6, 41), KvCacheFullError);
      cache.free(4);
      cache.free(5);
      assert.equal(cache.usage().reservedBytes, 0);
    });

    test('stored blocks take budget beside the other reservations (the source covers its own)', async () => {
      cache.allocate(7, 30);
      await backend.decoder!.step([{ seqId: 7, ids: ids(20, 1) }]);
      cache.allocate(9, 170); // 200 of 200 reserved
      const h = cache.saveBlock(7, 0, 20); // fits beside seq 9 (170 + 20 <= 200), inside seq 7's reservation
      assert.throws(() => cache.saveBlock(7, 0, 20), KvCacheFullError); // 170 + 20 + 20 > 200
      cache.free(7);
      assert.throws(() => cache.allocate(8, 11), KvCacheFullError); // 170 + 20 stored + 11 > 200
      cache.allocate(8, 5);
      assert.throws(() => cache.loadBlock(8, h), /a block of 20 positions does not fit sequence 8's reservation/);
      cache.dropBlock(h);
      cache.free(8);
      cache.free(9);
    });
  });
}
