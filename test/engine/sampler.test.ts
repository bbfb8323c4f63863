import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler } from '../../src/engine/sampler.js';
import {
  applyPresenceFrequencyPenalty,
  applyRepetitionPenalty,
  argmax,
  minP,
  softmaxOver,
  topKIds,
  topP,
} from '../../src/engine/logits-processors.js';
import { createRng } from '../../src/engine/rng.js';
import type { SamplingParams } from '../../src/engine/types.js';

const base: SamplingParams = {
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: 1234,
};

function randomLogits(n: number, seed: number, scale = 4): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);
}

function logitsOfProbs(probs: number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

test('rng: deterministic per seed, in [0,1), different seeds differ', () => {
  const a = createRng(42);
  const b = createRng(42);
  const c = createRng(43);
  const xs = Array.from({ length: 1000 }, () => a.next());
  assert.deepEqual(xs, Array.from({ length: 1000 }, () => b.next()));
  assert.notDeepEqual(xs.slice(0, 10), Array.from({ length: 10 }, () => c.next()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
  // large and negative seeds are accepted and distinct
  assert.notEqual(createRng(2 ** 40).next(), createRng(0).next());
  assert.notEqual(createRng(-1).next(), createRng(1).next());
  assert.throws(() => createRng(0.5), RangeError);
});

test('argmax: ties go to the lowest id (torch.argmax)', () => {
  assert.equal(argmax(Float32Array.from([1, 3, 3, 2])), 1);
  assert.equal(argmax(Float32Array.from([-Infinity, -5, -5])), 1);
  assert.equal(argmax(Float32Array.from([7])), 0);
});

test('repetition penalty: HF semantics (divide positive, multiply negative)', () => {
  const l = Float32Array.from([2, -2, 1, 4]);
  applyRepetitionPenalty(l, new Map([[0, 1], [1, 3], [9, 1]]), 2);
  assert.deepEqual([...l], [1, -4, 1, 4]);
});

test('presence/frequency penalties: OpenAI formula over counts', () => {
  const l = Float32Array.from([1, 1, 1]);
  applyPresenceFrequencyPenalty(l, new Map([[0, 3], [2, 1]]), 0.5, 0.25);
  assert.deepEqual([...l], [1 - 0.75 - 0.5, 1, 1 - 0.25 - 0.5]);
});

test('top-k keeps ties with the k-th value; k=0 keeps every finite logit', () => {
  const l = Float32Array.from([1, 5, 3, 3, -Infinity, 0]);
  assert.deepEqual([...topKIds(l, 2)], [1, 2, 3]);
  assert.deepEqual([...topKIds(l, 1)], [1]);
  assert.deepEqual([...topKIds(l, 0)], [0, 1, 2, 3, 5]);
  assert.deepEqual([...topKIds(l, 100)], [0, 1, 2, 3, 5]);
  // agrees with a sort on random rows
  const r = randomLogits(3000, 7);
  const sorted = [...r].sort((a, b) => b - a);
  for (const k of [1, 5, 50]) {
    const ids = topKIds(r, k);
    assert.equal(ids.length, k);
    for (const id of ids) assert.ok(r[id] >= sorted[k - 1]);
  }
});

test('top-p: keeps tokens whose preceding cumulative mass is below p', () => {
  const l = logitsOfProbs([0.05, 0.5, 0.15, 0.3]);
  const ids = Int32Array.from([0, 1, 2, 3]);
  const c = softmaxOver(l, ids, 1);
  assert.deepEqual([...topP(c, 0.75).ids], [1, 3]);
  assert.deepEqual([...topP(c, 0.4).ids], [1]);
  assert.deepEqual([...topP(c, 0.81).ids], [1, 2, 3]);
  assert.deepEqual([...topP(c, 1).ids], [0, 1, 2, 3]);
  const kept = topP(c, 0.75);
  assert.ok(Math.abs(kept.probs[0] - 0.625) < 1e-6 && Math.abs(kept.probs[1] - 0.375) < 1e-6);
});

test('top-p on a large vocabulary matches the HF (sort ascending, cumsum) formulation', () => {
  for (const [seed, scale] of [
    [1, 4],
    [2, 12],
    [3, 0.5],
  ]) {
    const l = randomLogits(20000, seed, scale);
    const all = topKIds(l, 0);
    const c = softmaxOver(l, all, 1);
    const asc = [...c.probs.keys()].sort((a, b) => c.probs[a] - c.probs[b]);
    for (const p of [0.1, 0.5, 0.9, 0.99]) {
      let cum = 0;
      const reference = new Set<number>();
      for (const i of asc) {
        cum += c.probs[i];
        if (cum > 1 - p) reference.add(c.ids[i]);
      }
      const got = new Set(topP(c, p).ids);
      // Float summation order differs, so allow disagreement only on one boundary token.
      const diff = [...reference].filter((x) => !got.has(x)).length + [...got].filter((x) => !reference.has(x)).length;
      assert.ok(diff <= 1, `seed ${seed} p ${p}: ${got.size} vs ${reference.size}`);
    }
  }
});

test('min-p drops tokens below minP times the top probability', () => {
  const c = softmaxOver(logitsOfProbs([0.5, 0.3, 0.15, 0.05]), Int32Array.from([0, 1, 2, 3]), 1);
  assert.deepEqual([...minP(c, 0.25).ids], [0, 1, 2]);
  assert.deepEqual([...minP(c, 0.61).ids], [0]);
  assert.deepEqual([...minP(c, 0).ids], [0, 1, 2, 3]);
});

test('greedy when temperature is 0, penalties still apply', () => {
  const logits = Float32Array.from([1, 4, 3.9, 0]);
  const s = new Sampler({ ...base, temperature: 0 });
  assert.equal(s.sample(logits), 1);
  assert.equal(s.sample(logits), 1);
  const penalised = new Sampler({ ...base, temperature: 0, repetitionPenalty: 1.5 }, [1]);
  assert.equal(penalised.sample(logits), 2);
  assert.deepEqual([...logits], [1, 4, Math.fround(3.9), 0], 'the caller’s logits are not modified');
  const freq = new Sampler({ ...base, temperature: 0, frequencyPenalty: 0.2 });
  assert.equal(freq.sample(logits), 1); // 4
  assert.equal(freq.sample(logits), 2); // 4 - 0.2 < 3.9
});

test('seeded sampling is reproducible and seeds differ', () => {
  const logits = randomLogits(1000, 5, 3);
  const params = { ...base, temperature: 0.9, topP: 0.95, topK: 50, minP: 0.01 };
  const run = (seed: number): number[] => {
    const s = new Sampler({ ...params, seed });
    return Array.from({ length: 64 }, () => s.sample(logits));
  };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
});

test('sampling frequencies follow the distribution, and the filters hold', () => {
  const probs = [0.4, 0.3, 0.2, 0.1];
  const logits = logitsOfProbs(probs);
  const s = new Sampler({ ...base, seed: 99 });
  const counts = [0, 0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
  probs.forEach((p, i) => assert.ok(Math.abs(counts[i] / n - p) < 0.015, `token ${i}: ${counts[i] / n} vs ${p}`));

  const topK2 = new Sampler({ ...base, topK: 2, seed: 1 });
  for (let i = 0; i < 500; i++) assert.ok(topK2.sample(logits) < 2);
  const nucleus = new Sampler({ ...base, topP: 0.6, seed: 2 });
  for (let i = 0; i < 500; i++) assert.ok(nucleus.sample(logits) < 2);
  const cold = new Sampler({ ...base, temperature: 0.01, seed: 3 });
  for (let i = 0; i < 200; i++) assert.equal(cold.sample(logits), 0);
});
