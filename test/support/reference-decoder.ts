import type { TensorData } from '../../src/runtime/batch-step.js';

// A reference decoder in plain JS that follows the batching rules of docs/model-package.md:
// per layer and head, key/value/query of a position depend on its embedding and position id;
// attention covers slot j iff mask[j] == 1 and j <= P + t; logits come from the last position.

/** The reference decoder's dimensions: layers, KV heads, head dim, hidden size, vocabulary. */
export const REF = { L: 2, H: 2, Dh: 4, D: 6, V: 5 };
const { L, H, Dh, D, V } = REF;

function project(e: Float32Array, off: number, pos: number, l: number, h: number, kind: number): number[] {
  const out: number[] = [];
  for (let d = 0; d < Dh; d++) {
    let s = 0;
    for (let i = 0; i < D; i++) s += e[off + i] * Math.sin(1 + i * 0.7 + d * 1.3 + l * 0.5 + h * 0.9 + kind * 2.1);
    out.push(s * Math.cos(pos * 0.3 + d) + Math.sin(pos * 0.1 * (d + 1))); // position-dependent, like rope
  }
  return out;
}

export function referenceDecoder(feeds: Record<string, TensorData>): Record<string, { data: Float32Array; dims: number[] }> {
  const [B, T] = feeds.inputs_embeds.dims;
  const P = feeds.attention_mask.dims[1] - T;
  const emb = feeds.inputs_embeds.data as Float32Array;
  const mask = feeds.attention_mask.data as BigInt64Array;
  const pos = feeds.position_ids.data as BigInt64Array;
  const out: Record<string, { data: Float32Array; dims: number[] }> = {};
  const logits = new Float32Array(B * V);
  for (let l = 0; l < L; l++) {
    const pk = feeds[`past_key_values.${l}.key`].data as Float32Array;
    const pv = feeds[`past_key_values.${l}.value`].data as Float32Array;
    const nk = new Float32Array(B * H * T * Dh);
    const nv = new Float32Array(B * H * T * Dh);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let t = 0; t < T; t++) {
          const p = Number(pos[b * T + t]);
          nk.set(project(emb, (b * T + t) * D, p, l, h, 0), ((b * H + h) * T + t) * Dh);
          nv.set(project(emb, (b * T + t) * D, p, l, h, 1), ((b * H + h) * T + t) * Dh);
        }
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++) {
        const t = T - 1; // only the last position's output is reported
        const q = project(emb, (b * T + t) * D, Number(pos[b * T + t]), l, h, 2);
        const scores: number[] = [];
        const vals: number[][] = [];
        for (let j = 0; j <= P + t; j++) {
          if (mask[b * (P + T) + j] !== 1n) continue;
          const k = j < P ? pk.subarray(((b * H + h) * P + j) * Dh) : nk.subarray(((b * H + h) * T + j - P) * Dh);
          const v = j < P ? pv.subarray(((b * H + h) * P + j) * Dh) : nv.subarray(((b * H + h) * T + j - P) * Dh);
          scores.push(q.reduce((s, x, d) => s + x * k[d], 0) / 2);
          vals.push([...v.subarray(0, Dh)]);
        }
        const m = Math.max(...scores);
        const w = scores.map((s) => Math.exp(s - m));
        const z = w.reduce((a, x) => a + x, 0);
        for (let d = 0; d < Dh; d++) {
          const o = vals.reduce((s, v, i) => s + (w[i] / z) * v[d], 0);
          for (let x = 0; x < V; x++) logits[b * V + x] += o * Math.cos(x * 1.7 + d + h * 3 + l * 5);
        }
      }
    out[`present.${l}.key`] = { data: nk, dims: [B, H, T, Dh] };
    out[`present.${l}.value`] = { data: nv, dims: [B, H, T, Dh] };
  }
  out.logits = { data: logits, dims: [B, V] };
  return out;
}

