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
  assert.deepEqual(c.usage(), { usedBytes: 0, reservedBytes: 6 * perPos, capacityBytes: 10 * perPos, sequences: 1 });
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
  assert.equal(g.pastLength, 4);
  assert.deepEqual(g.lengths, [2, 4]);
  assert.deepEqual([...g.mask], [1, 1, 0, 0, 1, 1, 1, 1]);
  const { numKvHeads: H, headDim: Dh } = layout;
  const at = (a: Float32Array, b: number, h: number, j: number, d: number): number => a[((b * H + h) * 4 + j) * Dh + d];
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
