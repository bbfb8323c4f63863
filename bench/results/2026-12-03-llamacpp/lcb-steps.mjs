// Decode-step timings of a package's decoder through one runtime (bench/decode-steps.ts), for the
// side-by-side run against llama.cpp (side.sh): B rows x past positions, median of 20 steps, 2
// threads. Run after `npm run build`: node bench/results/2026-12-03-llamacpp/lcb-steps.mjs PKG native 70,800 1,8
import { loadDecoder, packageDecoder, timeDecodeSteps } from '../../../dist/bench/decode-steps.js';
const [dir, runtime = 'native', pasts = '70,800', batches = '1,8'] = process.argv.slice(2);
const g = packageDecoder(dir);
const { backend } = await loadDecoder(g, { runtime, executionProvider: 'cpu', threads: 2, kvCacheBytes: 2 ** 31 });
for (const past of pasts.split(',').map(Number))
  for (const b of batches.split(',').map(Number)) {
    const t = await timeDecodeSteps(backend, b, past, 20, g.dims.vocabSize);
    console.log(JSON.stringify({ runtime, batch: b, past, stepMs: t.stepMs, tokPerS: t.tokensPerSecond, bytesToJs: t.perStep.bytesToJs }));
  }
await backend.release();
process.exit(0);
