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
