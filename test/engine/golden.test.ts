// The engine against the reference: for every fixture package and golden case, the prompt ids,
// the first step's top-5 logits (fp32, 1e-4) and 32 greedy tokens must match what HF
// transformers computed (test/fixtures/README.md), on each runtime (native and js).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createEngineFromPort, type LoadedEngine } from '../../src/engine/engine.js';
import type { ModelPort } from '../../src/engine/model-port.js';
import { directRunner, preparePrompt } from '../../src/engine/prepare.js';
import { ModelRunner } from '../../src/runtime/model-runner.js';
import { caseMessages, goldenPackages, goldenPort, loadGolden, request, runnerOptions, runtimesFor } from '../support/golden.js';

const packages = goldenPackages();

test('fixture packages exist', { skip: packages.length === 0 ? 'no fixture packages yet' : false }, () => {
  assert.ok(packages.length > 0);
});

for (const name of packages) for (const runtime of await runtimesFor(name)) {
  describe(`${name} (${runtime} runtime)`, () => {
    const golden = loadGolden(name);
    let port: ModelPort;
    let engine: LoadedEngine;
    let runner: ModelRunner;

    before(async () => {
      port = await goldenPort(name);
      engine = createEngineFromPort(port, { runtime, warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1 });
      runner = await ModelRunner.start({ ...runnerOptions(port, runtime), separateVisionWorker: false });
      await engine.ready();
      assert.equal(runner.runtime, runtime, runner.runtimeFallbackReason ?? '');
    });
    after(async () => {
      await engine?.close();
      await runner?.close();
    });

    test('prompt ids match the reference tokenization', async () => {
      for (const c of golden.cases) {
        const { ids } = await port.encodeMessages(caseMessages(c));
        assert.deepEqual(ids, c.prompt_ids, c.name);
      }
    });

    test('first-step top-5 logits within 1e-4', async () => {
      for (const [i, c] of golden.cases.entries()) {
        const prompt = await preparePrompt(caseMessages(c), port, directRunner(runner), { maxImages: 8 });
        assert.equal(prompt.length, c.input_length, `${c.name}: input length`);
        await runner.allocate(i, prompt.length);
        const { logits } = await runner.step([{ seqId: i, embeds: prompt.embeds }]);
        await runner.free(i);
        c.first_step_top5.ids.forEach((id, k) => {
          const want = c.first_step_top5.logits[k];
          assert.ok(Math.abs(logits[id] - want) < 1e-4, `${c.name}: logit[${id}] = ${logits[id]}, reference ${want}`);
        });
        const top = [...logits.keys()].sort((a, b) => logits[b] - logits[a] || a - b).slice(0, 5);
        assert.deepEqual(top, c.first_step_top5.ids, `${c.name}: top-5 ids`);
      }
    });

    test('every case in one batch (one prefill step, then decode steps) equals the reference', async () => {
      // Mixed prompt lengths, with and without images, left-padded into one decoder call.
      const prompts = await Promise.all(golden.cases.map((c) => preparePrompt(caseMessages(c), port, directRunner(runner), { maxImages: 8 })));
      const ids = golden.cases.map((_, i) => 1000 + i);
      for (const [i, p] of prompts.entries()) await runner.allocate(ids[i], p.length + 32);
      const V = port.text.vocabSize;
      const argmax = (logits: Float32Array, b: number): number => {
        let best = 0;
        for (let v = 1; v < V; v++) if (logits[b * V + v] > logits[b * V + best]) best = v;
        return best;
      };
      let step = await runner.step(prompts.map((p, i) => ({ seqId: ids[i], embeds: p.embeds })));
      golden.cases.forEach((c, b) =>
        c.first_step_top5.ids.forEach((id, k) => {
          const got = step.logits[b * V + id];
          assert.ok(Math.abs(got - c.first_step_top5.logits[k]) < 1e-4, `${c.name}: batched logit[${id}] = ${got}`);
        }),
      );
      const tokens: number[][] = golden.cases.map(() => []);
      for (let t = 0; t < 32; t++) {
        tokens.forEach((row, b) => row.push(argmax(step.logits, b)));
        if (t < 31) step = await runner.step(ids.map((seqId, b) => ({ seqId, ids: Int32Array.of(tokens[b][t]) })));
      }
      for (const seqId of ids) await runner.free(seqId);
      golden.cases.forEach((c, b) => assert.deepEqual(tokens[b], c.greedy_ids, `${c.name} (batched)`));
    });

    test('greedy tokens equal the reference, one request at a time', async () => {
      for (const c of golden.cases) {
        const ids: number[] = [];
        let done = false;
        for await (const e of engine.generate(request(caseMessages(c)))) {
          if (e.type === 'delta') ids.push(...e.tokenIds);
          else {
            done = true;
            assert.equal(e.finishReason, 'length');
            assert.equal(e.usage.completionTokens, 32);
            assert.equal(e.usage.promptTokens, c.input_length);
          }
        }
        assert.ok(done);
        assert.deepEqual(ids, c.greedy_ids, c.name);
      }
    });
  });
}
