// Smoke test of `npm run bench -- --quick`: the whole benchmark runs on the tiny fixture and
// writes a complete report. It checks the report's shape, never a speed.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

test('bench --quick writes JSON and Markdown with every measurement', { timeout: 240_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-'));
  try {
    await promisify(execFile)(
      process.execPath,
      [join(root, 'dist', 'bench', 'serve-bench.js'), '--quick', '--model', join(root, 'test/fixtures/packages/tiny-random-qwen2-siglip'), '--out', out],
      { cwd: root, timeout: 230_000 },
    );
    const files = readdirSync(out).sort();
    assert.equal(files.length, 2);
    assert.match(files[0], /tiny-random-qwen2-siglip-fp32-quick\.json$/);
    const report = JSON.parse(readFileSync(join(out, files[0]), 'utf8'));
    assert.deepEqual(report.batched.map((l: { concurrency: number }) => l.concurrency), [1, 2]);
    assert.deepEqual(report.unbatched.map((l: { concurrency: number }) => l.concurrency), [1, 2]);
    for (const level of [...report.batched, ...report.unbatched]) {
      assert.equal(level.failed, 0);
      assert.equal(level.outputTokens, level.requests * 8); // ignore_eos: exactly max_tokens each
      for (const key of ['outputTokensPerSecond', 'requestsPerSecond', 'ttftP50', 'ttftP95', 'itlP50', 'itlP95']) {
        assert.ok(Number.isFinite(level[key]) && level[key] >= 0, `${key} = ${level[key]}`);
      }
      assert.ok(level.serverRssBytes > 0);
    }
    assert.ok(report.engineAlone.decodeTokensPerSecond > 0);
    // both runtimes side by side, with ratios, and the native one hands only logits to JS
    assert.equal(report.runtime, 'native');
    assert.deepEqual(report.runtimes.map((r: { runtime: string }) => r.runtime), ['native', 'js']);
    for (const run of report.runtimes) {
      assert.deepEqual(run.batched.map((l: { failed: number }) => l.failed), [0, 0]);
      assert.deepEqual(run.decodeSteps.map((s: { batch: number }) => s.batch), [1, 2]);
      for (const step of run.decodeSteps) {
        assert.ok(step.stepMs > 0);
        if (run.runtime === 'native') assert.equal(step.perStep.bytesToJs, step.logitsBytes);
        else assert.ok(step.perStep.bytesToJs > step.logitsBytes);
      }
    }
    const [ratios] = report.runtimeRatios;
    assert.equal(ratios.of, 'native');
    assert.equal(ratios.over, 'js');
    for (const x of [...ratios.outputTokensPerSecond, ...ratios.decodeStep]) assert.ok(x.ratio > 0, JSON.stringify(x));
    assert.ok(report.httpOverDecodeRatio > 0);
    const md = readFileSync(join(out, files[1]), 'utf8');
    assert.match(md, /\| concurrency \| out tok\/s/);
    assert.match(md, /Engine alone \(no HTTP\)/);
    assert.match(md, /Runtimes side by side/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bench --json-schema --quick compares decoding with and without the schema in one report', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-'));
  try {
    await promisify(execFile)(
      process.execPath,
      [
        join(root, 'dist', 'bench', 'serve-bench.js'),
        '--quick',
        '--model',
        join(root, 'test/fixtures/packages/tiny-random-qwen2-siglip'),
        '--json-schema',
        join(root, 'bench/schemas/receipt.json'),
        '--concurrency',
        '1,4',
        '--output-tokens',
        '16',
        '--out',
        out,
      ],
      { cwd: root, timeout: 110_000 },
    );
    const files = readdirSync(out).sort();
    assert.equal(files.length, 2);
    assert.match(files[0], /tiny-random-qwen2-siglip-fp32-structured-quick\.json$/);
    const report = JSON.parse(readFileSync(join(out, files[0]), 'utf8'));
    assert.equal(report.batch, 4);
    for (const x of [report.plain.decodeB1, report.schema.decodeB1, report.ratioB1]) assert.ok(Number.isFinite(x) && x > 0, String(x));
    assert.equal(report.schema.answers, report.rounds * 5);
    assert.ok(report.schema.meanTokens > 0 && report.schema.meanTokens <= 16);
    assert.match(readFileSync(join(out, files[1]), 'utf8'), /\| \*\*constrained \/ unconstrained\*\* \|/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bench --multi-turn --quick: TTFT per turn with the prefix cache on and off, the cache hit from turn 2 on', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-'));
  try {
    await promisify(execFile)(
      process.execPath,
      [join(root, 'dist', 'bench', 'serve-bench.js'), '--quick', '--multi-turn', '--model', join(root, 'test/fixtures/packages/tiny-random-qwen2-siglip'), '--out', out],
      { cwd: root, timeout: 110_000 },
    );
    const files = readdirSync(out).sort();
    assert.equal(files.length, 2);
    assert.match(files[0], /tiny-random-qwen2-siglip-fp32-multi-turn-quick\.json$/);
    const report = JSON.parse(readFileSync(join(out, files[0]), 'utf8'));
    const { on, off } = report.prefixCache;
    assert.deepEqual(on.map((l: { concurrency: number }) => l.concurrency), [1, 2]);
    for (const [i, level] of on.entries()) {
      assert.equal(level.failed + off[i].failed, 0);
      assert.equal(level.turns.length, 4);
      for (const [t, turn] of level.turns.entries()) {
        const offTurn = off[i].turns[t];
        assert.equal(turn.promptTokens, offTurn.promptTokens, 'the same conversations on both servers');
        assert.equal(offTurn.cachedTokens, 0);
        // from turn 2 on, at least turn 1's whole prompt but its partial last block comes from the cache
        if (t > 0) assert.ok(turn.cachedTokens >= Math.floor(level.turns[0].promptTokens / 16) * 16, JSON.stringify(turn));
        assert.ok(turn.cachedTokens < turn.promptTokens);
        assert.ok(turn.ttftP50 > 0 && offTurn.ttftP50 > 0);
      }
    }
    assert.equal(report.comparison.length, 8);
    assert.deepEqual(report.targets.map((t: { concurrency: number }) => t.concurrency), [1]);
    assert.match(readFileSync(join(out, files[1]), 'utf8'), /\| concurrency \| turn \| prompt positions \| cached positions \(on\)/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
