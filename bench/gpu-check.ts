// The node side of bench/gpu-check.sh (run there on a GPU machine; runnable on any machine with
// --execution-provider cpu to check the script itself). Prints one JSON report:
//   provider:  which runtime, provider and ONNX Runtime core library loaded (or why not);
//   golden:    greedy tokens of a fixture package on this provider against the CPU golden file
//              (text-only cases: their prompt ids are in the golden file, no tokenizer needed);
//   steps:     decode step time at each batch with a past of --past positions on a decoder
//              (bench/make_synthetic_decoder.py's TinyLlama shape), and per step the bytes into
//              JS and between host and device (StepCounters), against the logits' bytes.
//
//   node dist/bench/gpu-check.js --execution-provider cuda --cuda-dir DIR --golden-package DIR
//     --decoder-dir DIR [--batches 1,8,32] [--past 800] [--steps 20]

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { greedyFromIds, loadDecoder, packageDecoder, timeDecodeSteps, type DecoderGraphs } from './decode-steps.js';

interface GoldenCase {
  name: string;
  image_spans: unknown[];
  prompt_ids: number[];
  greedy_ids: number[];
}

function syntheticDecoder(dir: string): DecoderGraphs {
  const d = JSON.parse(readFileSync(join(dir, 'dims.json'), 'utf8'));
  return {
    embedTokens: join(dir, 'embed_tokens.onnx'),
    decoder: join(dir, 'decoder.onnx'),
    dims: { numLayers: d.numLayers, numKvHeads: d.numKvHeads, headDim: d.headDim, hiddenSize: d.hiddenSize, vocabSize: d.vocabSize },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'execution-provider': { type: 'string', default: 'cuda' },
      'cuda-dir': { type: 'string' },
      'golden-package': { type: 'string' },
      'decoder-dir': { type: 'string' },
      batches: { type: 'string', default: '1,8,32' },
      past: { type: 'string', default: '800' },
      steps: { type: 'string', default: '20' },
    },
  });
  const provider = values['execution-provider'] === 'cpu' ? 'cpu' : 'cuda';
  const cudaDir = values['cuda-dir'];
  const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, executionProvider: provider };
  const print = (): void => console.log(JSON.stringify(report, null, 2));

  if (values['golden-package']) {
    const dir = values['golden-package'];
    const g = packageDecoder(dir);
    const name = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).name as string;
    const golden = JSON.parse(readFileSync(join(dir, '../../golden', `${name}.json`), 'utf8')) as { cases: GoldenCase[] };
    try {
      const { backend, choice, loadSeconds } = await loadDecoder(g, { runtime: 'native', executionProvider: provider, cudaDir, kvCacheBytes: 1 << 28 });
      report.provider = { runtime: choice.runtime, executionProvider: choice.provider, library: choice.native?.library, cudaRuntime: choice.native?.cudaRuntime, loadSeconds };
      const cases = [];
      for (const c of golden.cases.filter((x) => x.image_spans.length === 0)) {
        const ids = await greedyFromIds(backend, c.prompt_ids, c.greedy_ids.length, g.dims.vocabSize);
        const equal = ids.every((id, i) => id === c.greedy_ids[i]);
        cases.push({ name: c.name, tokens: ids.length, equal, ...(equal ? {} : { got: ids, want: c.greedy_ids }) });
      }
      report.golden = { package: name, cases, allEqual: cases.length > 0 && cases.every((c) => c.equal) };
      await backend.release();
    } catch (err) {
      report.provider = { error: (err as Error).message };
      print();
      process.exitCode = 1;
      return;
    }
  }

  if (values['decoder-dir']) {
    const g = syntheticDecoder(values['decoder-dir']);
    const batches = values.batches!.split(',').map(Number);
    const past = Number(values.past);
    const steps = Number(values.steps);
    const kvElem = JSON.parse(readFileSync(join(values['decoder-dir'], 'dims.json'), 'utf8')).dtype === 'fp16' ? 2 : 4;
    const bytesPerPosition = 2 * g.dims.numLayers * g.dims.numKvHeads * g.dims.headDim * kvElem;
    const { backend, loadSeconds } = await loadDecoder(g, {
      runtime: 'native',
      executionProvider: provider,
      cudaDir,
      kvCacheBytes: Math.max(...batches) * (past + steps + 8) * bytesPerPosition,
    });
    const timings = [];
    let chunkedPrefillError: string | null = null;
    for (const b of batches) {
      try {
        timings.push(await timeDecodeSteps(backend, b, past, steps, g.dims.vocabSize));
      } catch (err) {
        // A prompt chunk after a past (T > 1, past > 0) is what the engine sends for long
        // prompts; say so if the provider refuses it, and time decode after a one-call prefill.
        chunkedPrefillError ??= (err as Error).message;
        console.error(`B=${b}: ${(err as Error).message}; again with the prompt in one call`);
        timings.push(await timeDecodeSteps(backend, b, past, steps, g.dims.vocabSize, past));
      }
      console.error(`decode step B=${b}: ${timings.at(-1)!.stepMs} ms`);
    }
    const one = timings.find((t) => t.batch === 1);
    report.steps = {
      decoder: values['decoder-dir'],
      loadSeconds,
      timings,
      chunkedPrefillError,
      onlyLogitsCross: timings.every((t) => t.perStep.bytesToJs === t.logitsBytes && t.perStep.deviceToHostBytes <= t.logitsBytes),
      aggregateOverBatch1: one ? timings.map((t) => ({ batch: t.batch, ratio: Number((t.tokensPerSecond / one.tokensPerSecond).toFixed(2)) })) : null,
    };
    await backend.release();
  }
  print();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
