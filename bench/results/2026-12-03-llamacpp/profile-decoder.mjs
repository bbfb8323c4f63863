// onnxruntime's profile of decode steps of a package's decoder: B rows of one new token each over
// a past of P positions, 3 warm-up and 20 timed runs, 2 threads, onnxruntime-node 1.30 (the ORT
// library the native runtime loads too). The profile JSON goes to the temp folder as
// decoder-profile_*.json; summarise-profile.py sums it per op type. Run from the repository root
// after `npm run build` (the package's decoder and dimensions come from its manifest):
//   node bench/results/2026-12-03-llamacpp/profile-decoder.mjs PKG P [B]
import ort from 'onnxruntime-node';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageDecoder } from '../../../dist/bench/decode-steps.js';

const [dir, pastArg = '70', batchArg = '1'] = process.argv.slice(2);
const B = +batchArg, P = +pastArg;
const { decoder: file, dims } = packageDecoder(dir);
const { numLayers: L, hiddenSize: H, numKvHeads: KV, headDim: D } = dims;
const s = await ort.InferenceSession.create(file, { intraOpNumThreads: 2, graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: join(tmpdir(), 'decoder-profile') });
const f = {
  inputs_embeds: new ort.Tensor('float32', Float32Array.from({ length: B * H }, () => Math.random() * 0.02), [B, 1, H]),
  attention_mask: new ort.Tensor('int64', new BigInt64Array(B * (P + 1)).fill(1n), [B, P + 1]),
  position_ids: new ort.Tensor('int64', new BigInt64Array(B).fill(BigInt(P)), [B, 1]),
};
for (let l = 0; l < L; l++) for (const kv of ['key', 'value'])
  f[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(B * KV * P * D).fill(0.01), [B, KV, P, D]);
for (let i = 0; i < 3; i++) await s.run(f);
const t0 = performance.now();
for (let i = 0; i < 20; i++) await s.run(f);
console.log('step ms (profiled)', ((performance.now() - t0) / 20).toFixed(1));
s.endProfiling?.();
process.exit(0);
