// ORT profile of batch-1 decode steps of a package's decoder (onnxruntime-node 1.30, the ORT library the
// native runtime loads too, 2 threads): 3 warm-up and 20 timed runs at a past of P positions; the
// profile JSON is written to the temp folder as decoder-profile_*.json (summarise-profile.py). Run from the repository root:
// node bench/results/2026-12-03-llamacpp/profile-decoder.mjs PKG/onnx/decoder_model_merged_q4.onnx 70
import ort from 'onnxruntime-node';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const [file, pastArg = '70', layersArg = '22', hiddenArg = '2048', kvArg = '4'] = process.argv.slice(2);
const P = +pastArg, L = +layersArg, H = +hiddenArg, KV = +kvArg, D = 64;
const s = await ort.InferenceSession.create(file, { intraOpNumThreads: 2, graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: join(tmpdir(), 'decoder-profile') });
const feeds = () => {
  const f = {
    inputs_embeds: new ort.Tensor('float32', Float32Array.from({ length: H }, () => Math.random() * 0.02), [1, 1, H]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(P + 1).fill(1n), [1, P + 1]),
    position_ids: new ort.Tensor('int64', BigInt64Array.of(BigInt(P)), [1, 1]),
  };
  for (let l = 0; l < L; l++) for (const kv of ['key', 'value'])
    f[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(KV * P * D).fill(0.01), [1, KV, P, D]);
  return f;
};
const f = feeds();
for (let i = 0; i < 3; i++) await s.run(f);
const t0 = performance.now();
for (let i = 0; i < 20; i++) await s.run(f);
const ms = (performance.now() - t0) / 20;
const out = s.endProfiling?.() ?? null;
console.log('step ms', ms.toFixed(1), 'profile', out);
process.exit(0);
