// One batched decoder step: the feeds for several sequences with different past lengths and
// different numbers of new tokens, and the bookkeeping after the call. Pure (no ORT), so that
// it can be tested against a reference decoder written in JS.
//
// Layout of a batch of B rows, T = the most new tokens of any row, P = the longest past:
//
//   attention_mask [B, P+T]     past slots 0..P-1          new slots P..P+T-1
//     row 0 (past 5, 3 new)     1 1 1 1 1 0 0 0 (P=8)      0 0 0 1 1 1   <- left-padded
//     row 1 (past 8, 6 new)     1 1 1 1 1 1 1 1            1 1 1 1 1 1
//   position_ids [B, T]         row 0: 0 0 0 5 6 7         row 1: 8 9 10 11 12 13
//
// A row's real new tokens are right-aligned so that its last token sits at T-1, the position
// whose logits the decoder reports. Padding gets mask 0, zero embeddings and position 0.

import type { HostKvCache, PresentTensors } from './kv-cache.js';

export interface TensorData {
  type: 'float32' | 'int64';
  data: Float32Array | BigInt64Array;
  dims: number[];
}

export interface StepRow {
  seqId: number;
  /** [count, D] embeddings of the row's new positions. */
  embeds: Float32Array;
  count: number;
}

export interface DecoderFeeds {
  feeds: Record<string, TensorData>;
  batch: number;
  newPositions: number; // T
  pastLength: number; // P
}

export function buildDecoderFeeds(rows: readonly StepRow[], cache: HostKvCache, hiddenSize: number): DecoderFeeds {
  const D = hiddenSize;
  const { numLayers, numKvHeads: H, headDim: Dh } = cache.layout;
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.count));
  for (const r of rows) {
    if (r.count < 1 || r.embeds.length !== r.count * D) {
      throw new Error(`decoder step: sequence ${r.seqId} has ${r.embeds.length} embedding values for ${r.count} positions of ${D}`);
    }
  }
  const past = cache.gather(rows.map((r) => r.seqId));
  const P = past.pastLength;

  const embeds = new Float32Array(B * T * D); // [B,T,D]
  const mask = new BigInt64Array(B * (P + T)); // [B,P+T]
  const positions = new BigInt64Array(B * T); // [B,T]
  rows.forEach((r, b) => {
    const pad = T - r.count;
    embeds.set(r.embeds, (b * T + pad) * D);
    for (let j = 0; j < P; j++) mask[b * (P + T) + j] = BigInt(past.mask[b * P + j]);
    for (let t = pad; t < T; t++) {
      mask[b * (P + T) + P + t] = 1n;
      positions[b * T + t] = BigInt(past.lengths[b] + t - pad);
    }
  });

  const feeds: Record<string, TensorData> = {
    inputs_embeds: { type: 'float32', data: embeds, dims: [B, T, D] },
    attention_mask: { type: 'int64', data: mask, dims: [B, P + T] },
    position_ids: { type: 'int64', data: positions, dims: [B, T] },
  };
  for (let l = 0; l < numLayers; l++) {
    feeds[`past_key_values.${l}.key`] = { type: 'float32', data: past.keys[l], dims: [B, H, P, Dh] };
    feeds[`past_key_values.${l}.value`] = { type: 'float32', data: past.values[l], dims: [B, H, P, Dh] };
  }
  return { feeds, batch: B, newPositions: T, pastLength: P };
}

/** Appends each row's real new positions from the decoder's present.{i}.* outputs to the cache. */
export function appendPresents(
  rows: readonly StepRow[],
  outputs: Record<string, { data: unknown }>,
  step: DecoderFeeds,
  cache: HostKvCache,
): void {
  const presents: PresentTensors = { keys: [], values: [], batch: step.batch, newPositions: step.newPositions };
  for (let l = 0; l < cache.layout.numLayers; l++) {
    presents.keys.push(outputs[`present.${l}.key`].data as Float32Array);
    presents.values.push(outputs[`present.${l}.value`].data as Float32Array);
  }
  rows.forEach((r, b) => cache.append(r.seqId, presents, b, r.count));
}
