import { test } from 'node:test';
import assert from 'node:assert/strict';
import { figures, summaryTable } from '../../bench/summarize.js';

function report(engine1: number, engine8: number | null, http1: number | null, http8: number | null) {
  return {
    model: 'm',
    batched: [
      { concurrency: 1, steadyDecodeTokensPerSecond: http1 },
      { concurrency: 8, steadyDecodeTokensPerSecond: http8 },
    ],
    engineAlone: { decodeTokensPerSecond: engine1, batch: 8, batchSteadyDecodeTokensPerSecond: engine8 },
    httpSingleStreamDecode: http1,
  };
}

test('figures: each ratio is taken within its run', () => {
  assert.deepEqual(figures(report(10, 50, 9, 40)), {
    'engine c=1 tok/s': 10,
    'engine c=8 tok/s': 50,
    'engine c=8 / c=1': 5,
    'HTTP c=1 tok/s': 9,
    'HTTP c=1 / engine': 0.9,
    'HTTP c=8 tok/s': 40,
    'HTTP c=8 / c=1': 4.44,
  });
  assert.equal(figures(report(10, null, null, null))['engine c=8 / c=1'], null);
});

test('summary: one row per run and the median of each column, skipping runs that lack it', () => {
  const table = summaryTable(['a', 'b', 'c'], [report(10, 50, 9, 40), report(20, 60, 10, 30), report(12, null, 11, 35)]);
  const rows = table.split('\n');
  assert.equal(rows.length, 2 + 3 + 1);
  assert.match(rows[2], /^\| a \| 10 \| 50 \| 5 \| 9 \| 0.9 \| 40 \| 4.44 \|$/);
  assert.match(rows[4], /^\| c \| 12 \| - \| - \| 11 \|/);
  // medians: engine c=1 of 10,20,12 -> 12; engine c=8 of 50,60 -> 55; its ratio of 5,3 -> 4
  assert.match(rows[5], /^\| \*\*median\*\* \| \*\*12\*\* \| \*\*55\*\* \| \*\*4\*\* \| \*\*10\*\* \|/);
});
