import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logprobsOf, logSumExp } from '../../src/engine/logprobs.js';

test('log-softmax: probabilities sum to one, stable for large logits', () => {
  const logits = Float32Array.from([1000, 999, 998, -1000]);
  const lse = logSumExp(logits);
  assert.ok(Number.isFinite(lse));
  const total = [...logits].reduce((s, l) => s + Math.exp(l - lse), 0);
  assert.ok(Math.abs(total - 1) < 1e-12);
});

test('chosen and top-N logprobs, most likely first, ties by id', () => {
  const logits = Float32Array.from([0, 2, 1, 2, -1]);
  const r = logprobsOf(logits, 2, 3);
  const lse = Math.log([0, 2, 1, 2, -1].reduce((s, l) => s + Math.exp(l), 0));
  assert.ok(Math.abs(r.chosen.logprob - (1 - lse)) < 1e-9);
  assert.equal(r.chosen.id, 2);
  assert.deepEqual(
    r.top.map((t) => t.id),
    [1, 3, 2],
  );
  assert.equal(logprobsOf(logits, 0, 0).top.length, 0);
  assert.equal(logprobsOf(logits, 0, 20).top.length, 5);
});
