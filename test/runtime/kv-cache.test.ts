import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsKvCache, KvCacheFullError, type PresentTensors } from '../../src/runtime/kv-cache.js';

const layout = { numLayers: 2, numKvHeads: 2, headDim: 3 };
const perPos = 2 * 2 * 2 * 3 * 4; // keys+values, layers, heads, head dim, float32

/** Presents [B,H,T,Dh] whose value encodes (layer, key/value, row, head, t, d). */
function presents(B: number, T: number, tag = 0): PresentTensors {
  const { numLayers: L, numKvHeads: H, headDim: Dh } = layout;
  const make = (l: number, kv: number): Float32Array => {
    const a = new Float32Array(B * H * T * Dh);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let t = 0; t < T; t++)
          for (let d = 0; d < Dh; d++) a[((b * H + h) * T + t) * Dh + d] = code(tag, l, kv, b, h, t, d);
    return a;
  };
  return {
    keys: Array.from({ length: L }, (_, l) => make(l, 0)),
    values: Array.from({ length: L }, (_, l) => make(l, 1)),
    batch: B,
    newPositions: T,
  };
}

function code(tag: number, l: number, kv: number, b: number, h: number, t: number, d: number): number {
  return tag * 100000 + l * 10000 + kv * 5000 + b * 1000 + h * 100 + t * 10 + d;
}

test('bytes per position and reservation accounting', () => {
  const c = new JsKvCache(layout, perPos * 10);
  assert.equal(c.bytesPerPosition, perPos);
  c.allocate(1, 6);
  assert.deepEqual(c.usage(), { usedBytes: 0, reservedBytes: 6 * perPos, capacityBytes: 10 * perPos, sequences: 1, storedBytes: 0, storedBlocks: 0 });
  assert.throws(() => c.allocate(2, 5), KvCacheFullError);
  c.allocate(2, 4);
  assert.throws(() => c.allocate(2, 0), /already allocated/);
  c.free(1);
  assert.equal(c.usage().reservedBytes, 4 * perPos);
  c.allocate(3, 6);
  c.free(99); // unknown ids are ignored
  assert.equal(c.usage().sequences, 2);
});

test('append takes a row’s last `count` positions (left padding) and gather lays out [B,H,P,Dh]', () => {
  const c = new JsKvCache(layout, perPos * 100);
  c.allocate(1, 10);
  c.allocate(2, 10);
  const p = presents(2, 4, 1);
  c.append(1, p, 0, 4); // row 0: all 4 new positions
  c.append(2, p, 1, 2); // row 1: left-padded, real positions t=2,3
  assert.equal(c.length(1), 4);
  assert.equal(c.length(2), 2);

  const g = c.gather([2, 1]);
  // Both moved into one block with room for the next token, capped by their reservation of 10.
  assert.equal(g.pastLength, 10);
  assert.deepEqual(g.lengths, [2, 4]);
  assert.deepEqual([...g.mask], [1, 1, ...Array(8).fill(0), 1, 1, 1, 1, ...Array(6).fill(0)]);
  const { numKvHeads: H, headDim: Dh } = layout;
  const at = (a: Float32Array, b: number, h: number, j: number, d: number): number => a[((b * H + h) * 10 + j) * Dh + d];
  for (let l = 0; l < 2; l++)
    for (let h = 0; h < H; h++)
      for (let d = 0; d < Dh; d++) {
        // gathered row 0 is sequence 2: came from present row 1, t = 2, 3; then zero padding
        assert.equal(at(g.keys[l], 0, h, 0, d), code(1, l, 0, 1, h, 2, d));
        assert.equal(at(g.values[l], 0, h, 1, d), code(1, l, 1, 1, h, 3, d));
        assert.equal(at(g.keys[l], 0, h, 2, d), 0);
        // gathered row 1 is sequence 1: present row 0, t = 0..3
        for (let j = 0; j < 4; j++) assert.equal(at(g.values[l], 1, h, j, d), code(1, l, 1, 0, h, j, d));
      }
});

test('growth keeps earlier positions; appending past the reservation grows it if capacity allows', () => {
  const c = new JsKvCache(layout, perPos * 40);
  c.allocate(1, 20);
  for (let i = 0; i < 20; i++) c.append(1, presents(1, 1, i), 0, 1);
  assert.equal(c.length(1), 20);
  const g = c.gather([1]);
  for (let j = 0; j < 20; j++) assert.equal(g.keys[1][(1 * 20 + j) * 3 + 2], code(j, 1, 0, 0, 1, 0, 2));
  assert.equal(c.usage().usedBytes, 20 * perPos);

  c.append(1, presents(1, 15), 0, 15); // 35 > 20 reserved, < 40 capacity
  assert.equal(c.usage().reservedBytes, 35 * perPos);
  assert.throws(() => c.append(1, presents(1, 6), 0, 6), KvCacheFullError);
  assert.equal(c.length(1), 35, 'a failed append leaves the sequence as it was');
});

test('gather of empty sequences gives P = 0', () => {
  const c = new JsKvCache(layout, perPos * 4);
  c.allocate(1, 2);
  c.allocate(2, 2);
  const g = c.gather([1, 2]);
  assert.equal(g.pastLength, 0);
  assert.equal(g.keys[0].length, 0);
  assert.equal(g.mask.length, 0);
  assert.throws(() => c.gather([3]), /unknown sequence 3/);
  assert.throws(() => c.gather([1, 2, 1]), /appears twice/);
  assert.throws(() => c.gather([]), /no sequences/);
});

test('a single sequence is gathered without copying: its storage, tail masked out', () => {
  const c = new JsKvCache(layout, perPos * 1000);
  c.allocate(1, 500);
  c.append(1, presents(1, 5, 3), 0, 5);
  const g = c.gather([1]);
  assert.equal(g.pastLength, 64, 'storage grows in blocks of 64 positions');
  assert.deepEqual([...g.mask], [...Array(5).fill(1), ...Array(59).fill(0)]);
  assert.deepEqual(g.lengths, [5]);
  assert.equal(g.keys[0][((1 * 64 + 4) * 3) + 1], code(3, 0, 0, 0, 1, 4, 1)); // head 1, position 4
  // a reservation smaller than a block caps the storage
  c.allocate(2, 10);
  c.append(2, presents(1, 3), 0, 3);
  assert.equal(c.gather([2]).pastLength, 10);
});

/** Row b's cached positions as the gathered feed shows them: [layer][kv][h][j][d] flattened. */
function rowOf(g: ReturnType<JsKvCache['gather']>, b: number): number[] {
  const { numLayers: L, numKvHeads: H, headDim: Dh } = layout;
  const P = g.pastLength;
  const out: number[] = [];
  for (let l = 0; l < L; l++)
    for (const a of [g.keys[l], g.values[l]])
      for (let h = 0; h < H; h++)
        for (let j = 0; j < g.lengths[b]; j++) for (let d = 0; d < Dh; d++) out.push(a[((b * H + h) * P + j) * Dh + d]);
  return out;
}

test('a decode batch is fed from one block: no copy while the same sequences step together', () => {
  const c = new JsKvCache(layout, perPos * 10000);
  for (const id of [1, 2, 3]) {
    c.allocate(id, 300);
    c.append(id, presents(1, 4 + id, id), 0, 4 + id); // prefills of 5, 6, 7 positions
  }
  const first = c.gather([1, 2, 3]);
  const expected = [0, 1, 2].map((b) => rowOf(first, b));
  const storage = first.keys[0].buffer;
  for (let step = 0; step < 100; step++) {
    const g = c.gather([1, 2, 3]);
    if (step < 50) assert.equal(g.keys[0].buffer, storage, `step ${step}: the same storage, not a copy`);
    // one new position per row, as a decode step appends
    const p = presents(3, 1, 10 + step);
    [1, 2, 3].forEach((id, b) => c.append(id, p, b, 1));
  }
  const after = c.gather([1, 2, 3]);
  assert.deepEqual(after.lengths, [105, 106, 107]);
  assert.ok(after.pastLength >= 108, 'the block grew');
  for (let b = 0; b < 3; b++) {
    const got = rowOf(after, b);
    // the prefill positions survived the growth, in every layer, head and half
    const L = layout.numLayers;
    const perHead = (n: number): number => n * layout.headDim;
    for (let l = 0; l < L; l++)
      for (let kv = 0; kv < 2; kv++)
        for (let h = 0; h < layout.numKvHeads; h++) {
          const oldAt = ((l * 2 + kv) * layout.numKvHeads + h) * perHead(5 + b);
          const newAt = ((l * 2 + kv) * layout.numKvHeads + h) * perHead(105 + b);
          assert.deepEqual(got.slice(newAt, newAt + perHead(5 + b)), expected[b].slice(oldAt, oldAt + perHead(5 + b)));
          // the decode positions are the appended ones
          assert.equal(got[newAt + perHead(5 + b) + 1], code(10, l, kv, b, h, 0, 1));
          assert.equal(got[newAt + perHead(104 + b) + 2], code(109, l, kv, b, h, 0, 2));
        }
  }
});

test('joins, leaves, reorders and single-sequence feeds keep every sequence’s positions', () => {
  const c = new JsKvCache(layout, perPos * 10000);
  // reference: what each sequence should hold, appended in the same order
  const want = new Map<number, { tag: number; b: number; t: number }[]>();
  const append = (id: number, p: PresentTensors, tag: number, b: number, count: number): void => {
    c.append(id, p, b, count);
    for (let t = p.newPositions - count; t < p.newPositions; t++) want.get(id)!.push({ tag, b, t });
  };
  const check = (ids: number[]): void => {
    const g = c.gather(ids);
    ids.forEach((id, b) => {
      assert.equal(g.lengths[b], want.get(id)!.length);
      for (let i = 0; i < g.mask.length / ids.length; i++) assert.equal(g.mask[b * g.pastLength + i], i < g.lengths[b] ? 1 : 0);
      const { numKvHeads: H, headDim: Dh } = layout;
      want.get(id)!.forEach(({ tag, b: pb, t }, j) => {
        for (let l = 0; l < layout.numLayers; l++)
          for (let h = 0; h < H; h++) {
            assert.equal(g.keys[l][((b * H + h) * g.pastLength + j) * Dh + 1], code(tag, l, 0, pb, h, t, 1), `seq ${id} pos ${j}`);
            assert.equal(g.values[l][((b * H + h) * g.pastLength + j) * Dh + 2], code(tag, l, 1, pb, h, t, 2));
          }
      });
    });
  };
  let tag = 0;
  const step = (ids: number[], counts: number[]): void => {
    check(ids);
    const T = Math.max(...counts);
    const p = presents(ids.length, T, ++tag);
    ids.forEach((id, b) => append(id, p, tag, b, counts[b]));
  };
  for (const id of [1, 2, 3, 4]) {
    c.allocate(id, 200);
    want.set(id, []);
  }
  step([1], [9]); // prefill alone
  step([2, 3], [4, 6]); // two prefills together
  step([1, 2, 3], [1, 1, 1]); // decode batch
  step([1, 2, 3], [1, 1, 1]);
  c.free(3); // the last row leaves
  want.delete(3);
  step([1, 2], [1, 1]);
  step([4], [70]); // a new prefill, longer than a growth block
  step([1, 2, 4], [1, 1, 1]); // it joins
  step([4, 1, 2], [1, 1, 1]); // another order
  c.free(1); // a middle row leaves
  want.delete(1);
  step([4, 2], [1, 1]);
  step([2], [3]); // fed alone from a shared block
  step([4, 2], [1, 1]);
  check([2, 4]);
  assert.equal(c.usage().usedBytes, (want.get(2)!.length + want.get(4)!.length) * perPos);
});
