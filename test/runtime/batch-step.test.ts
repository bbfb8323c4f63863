import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsKvCache } from '../../src/runtime/kv-cache.js';
import { appendPresents, buildDecoderFeeds, type StepRow, type TensorData } from '../../src/runtime/batch-step.js';
import { checkGraphIo, expectedGraphIo } from '../../src/runtime/graph-io.js';
import { REF, referenceDecoder } from '../support/reference-decoder.js';

const { L, H, Dh, D, V } = REF;

/** Deterministic embeddings for `count` new positions of sequence `seq` at step `step`. */
function embeds(seq: number, step: number, count: number): Float32Array {
  return Float32Array.from({ length: count * D }, (_, i) => Math.sin(seq * 13.1 + step * 7.7 + i * 0.37));
}

function runStep(cache: JsKvCache, rows: StepRow[]): Float32Array[] {
  const step = buildDecoderFeeds(rows, cache, D);
  const outputs = referenceDecoder(step.feeds);
  appendPresents(rows, outputs, step, cache);
  return rows.map((_, b) => outputs.logits.data.slice(b * V, (b + 1) * V));
}

/** A schedule: for each step, which sequences take part with how many new positions. */
type Schedule = { seq: number; count: number }[][];

function runSchedule(schedule: Schedule, batched: boolean): Map<string, Float32Array> {
  const cache = new JsKvCache({ numLayers: L, numKvHeads: H, headDim: Dh }, 1 << 20);
  const seen = new Map<number, number>(); // steps taken per sequence
  const results = new Map<string, Float32Array>();
  for (const stepRows of schedule) {
    const rows: StepRow[] = stepRows.map(({ seq, count }) => {
      if (!cache.has(seq)) cache.allocate(seq, 64);
      const n = seen.get(seq) ?? 0;
      seen.set(seq, n + 1);
      return { seqId: seq, embeds: embeds(seq, n, count), count };
    });
    const groups = batched ? [rows] : rows.map((r) => [r]);
    for (const g of groups) {
      runStep(cache, g).forEach((logits, i) => results.set(`${g[i].seqId}:${seen.get(g[i].seqId)}`, logits));
    }
    // sequences leave: free the ones that do not appear again
  }
  return results;
}

test('batched steps equal one-sequence steps: mixed past lengths, new-token counts, join/leave', () => {
  const schedule: Schedule = [
    [{ seq: 1, count: 5 }, { seq: 2, count: 3 }], // two prefills of different lengths
    [{ seq: 1, count: 1 }, { seq: 2, count: 1 }],
    [{ seq: 1, count: 1 }, { seq: 3, count: 7 }, { seq: 2, count: 1 }], // 3 joins with a prefill
    [{ seq: 3, count: 1 }, { seq: 2, count: 1 }], // 1 leaves
    [{ seq: 2, count: 2 }, { seq: 3, count: 1 }, { seq: 4, count: 1 }],
    [{ seq: 4, count: 4 }, { seq: 3, count: 1 }],
  ];
  const alone = runSchedule(schedule, false);
  const together = runSchedule(schedule, true);
  assert.equal(alone.size, together.size);
  for (const [key, want] of alone) {
    const got = together.get(key)!;
    for (let i = 0; i < V; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-9, `${key}[${i}]: ${got[i]} vs ${want[i]}`);
  }
});

test('feeds: shapes, left padding, mask and position ids', () => {
  const cache = new JsKvCache({ numLayers: L, numKvHeads: H, headDim: Dh }, 1 << 20);
  cache.allocate(1, 16);
  cache.allocate(2, 16);
  runStep(cache, [{ seqId: 1, embeds: embeds(1, 0, 5), count: 5 }]);
  runStep(cache, [{ seqId: 2, embeds: embeds(2, 0, 8), count: 8 }]);
  const step = buildDecoderFeeds(
    [
      { seqId: 1, embeds: embeds(1, 1, 3), count: 3 },
      { seqId: 2, embeds: embeds(2, 1, 6), count: 6 },
    ],
    cache,
    D,
  );
  // The two pasts (5 and 8) moved into one cache block of 16 positions (their reservation):
  // each row's unused tail is masked out.
  assert.equal(step.pastLength, 16);
  assert.equal(step.newPositions, 6);
  assert.deepEqual(step.feeds.inputs_embeds.dims, [2, 6, D]);
  assert.deepEqual(step.feeds['past_key_values.1.value'].dims, [2, H, 16, Dh]);
  assert.deepEqual(
    [...(step.feeds.attention_mask.data as BigInt64Array)].map(Number),
    [...Array(5).fill(1), ...Array(11).fill(0), 0, 0, 0, 1, 1, 1, ...Array(8).fill(1), ...Array(8).fill(0), ...Array(6).fill(1)],
  );
  assert.deepEqual([...(step.feeds.position_ids.data as BigInt64Array)].map(Number), [0, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
  const e = step.feeds.inputs_embeds.data as Float32Array;
  assert.ok(e.subarray(0, 3 * D).every((x) => x === 0), 'padding embeddings are zero');
  assert.deepEqual(e.subarray(3 * D, 6 * D), embeds(1, 1, 3));
  assert.throws(() => buildDecoderFeeds([{ seqId: 1, embeds: new Float32Array(5), count: 1 }], cache, D), /5 embedding values/);
});

test('graph I/O check names the file and what is missing', () => {
  const { inputs, outputs } = expectedGraphIo('decoder', 2);
  checkGraphIo('decoder', '/p/decoder.onnx', inputs, outputs, 2);
  assert.throws(
    () => checkGraphIo('decoder', '/p/decoder.onnx', inputs, outputs, 3),
    /\/p\/decoder\.onnx: the decoder graph does not match the package format for num_layers=3 in manifest\.json: missing inputs past_key_values\.2\.key/,
  );
  assert.throws(() => checkGraphIo('connector', '/p/c.onnx', ['x'], ['image_embeds'], 0), /missing inputs image_features; unexpected inputs x/);
});
