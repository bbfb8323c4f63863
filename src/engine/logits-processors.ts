// Logits processors: pure functions over one row of logits [V].
//
// Penalties edit the logits of the few tokens already seen, in place. The warpers (temperature,
// top-k, top-p, min-p) work on a candidate list instead of masking all V entries, because V is
// up to 256k (Gemma) and the survivors are usually a handful: sorting the whole vocabulary on
// every step would dominate decode time.

/** Token occurrence counts of the text the penalties look at. */
export type TokenCounts = Map<number, number>;

/**
 * HF RepetitionPenaltyLogitsProcessor: every token seen at least once has its logit divided by
 * `penalty` when positive and multiplied when negative (so it always becomes less likely).
 */
export function applyRepetitionPenalty(logits: Float32Array, seen: TokenCounts, penalty: number): void {
  if (penalty === 1) return;
  for (const id of seen.keys()) {
    if (id < 0 || id >= logits.length) continue;
    const l = logits[id];
    logits[id] = l < 0 ? l * penalty : l / penalty;
  }
}

/**
 * OpenAI presence/frequency penalties: logit -= count * frequency + (count > 0) * presence,
 * counted over the generated tokens only (as OpenAI and vLLM do).
 */
export function applyPresenceFrequencyPenalty(
  logits: Float32Array,
  generated: TokenCounts,
  presence: number,
  frequency: number,
): void {
  if (presence === 0 && frequency === 0) return;
  for (const [id, count] of generated) {
    if (id < 0 || id >= logits.length || count <= 0) continue;
    logits[id] -= count * frequency + presence;
  }
}

/** The surviving tokens and their probabilities (normalised over the survivors). */
export interface Candidates {
  ids: Int32Array;
  probs: Float64Array;
}

/** Index of the largest logit; ties go to the lowest id, like torch.argmax. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > bestValue) {
      bestValue = logits[i];
      best = i;
    }
  }
  return best;
}

/**
 * The ids of the k largest logits (HF TopKLogitsWarper keeps every token tied with the k-th,
 * so there may be more than k). Without top-k, every token with a finite logit.
 */
export function topKIds(logits: Float32Array, k: number): Int32Array {
  if (k <= 0 || k >= logits.length) {
    const all: number[] = [];
    for (let i = 0; i < logits.length; i++) if (logits[i] > -Infinity) all.push(i);
    return Int32Array.from(all);
  }
  const kth = kthLargest(logits, k);
  const kept: number[] = [];
  for (let i = 0; i < logits.length; i++) if (logits[i] >= kth) kept.push(i);
  return Int32Array.from(kept);
}

/** The k-th largest value, with a min-heap of size k: O(V log k), no copy of the row. */
function kthLargest(values: Float32Array, k: number): number {
  const heap = new Float64Array(k);
  let size = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (size < k) {
      // sift up
      let j = size++;
      heap[j] = v;
      while (j > 0) {
        const parent = (j - 1) >> 1;
        if (heap[parent] <= heap[j]) break;
        [heap[parent], heap[j]] = [heap[j], heap[parent]];
        j = parent;
      }
    } else if (v > heap[0]) {
      // replace the root, sift down
      heap[0] = v;
      let j = 0;
      for (;;) {
        const l = 2 * j + 1;
        const r = l + 1;
        let m = j;
        if (l < k && heap[l] < heap[m]) m = l;
        if (r < k && heap[r] < heap[m]) m = r;
        if (m === j) break;
        [heap[m], heap[j]] = [heap[j], heap[m]];
        j = m;
      }
    }
  }
  return heap[0];
}

/** Softmax of logits / temperature over the given ids (temperature > 0). */
export function softmaxOver(logits: Float32Array, ids: Int32Array, temperature: number): Candidates {
  let max = -Infinity;
  for (const id of ids) if (logits[id] > max) max = logits[id];
  const probs = new Float64Array(ids.length);
  let sum = 0;
  for (let i = 0; i < ids.length; i++) {
    probs[i] = Math.exp((logits[ids[i]] - max) / temperature);
    sum += probs[i];
  }
  for (let i = 0; i < probs.length; i++) probs[i] /= sum;
  return { ids, probs };
}

/**
 * HF TopPLogitsWarper: keep the most likely tokens whose cumulative probability, counted before
 * each token, stays below p (so at least one token survives). Only the candidates above a
 * shrinking probability threshold are sorted: once they already hold mass >= p, the nucleus is
 * among them.
 */
export function topP(c: Candidates, p: number): Candidates {
  if (p >= 1 || c.ids.length <= 1) return c;
  let pmax = 0;
  for (const q of c.probs) if (q > pmax) pmax = q;
  let order: number[] = [];
  for (let threshold = pmax * 1e-2; ; threshold *= 1e-2) {
    order = [];
    let mass = 0;
    for (let i = 0; i < c.probs.length; i++) {
      if (c.probs[i] >= threshold) {
        order.push(i);
        mass += c.probs[i];
      }
    }
    if (mass >= p || order.length === c.probs.length || threshold === 0) break;
  }
  // Descending probability; equal probabilities by ascending id for determinism.
  order.sort((a, b) => c.probs[b] - c.probs[a] || c.ids[a] - c.ids[b]);
  let cumulative = 0;
  let n = 0;
  while (n < order.length && (n === 0 || cumulative < p)) cumulative += c.probs[order[n++]];
  return renormalise(c, order.slice(0, n).sort((a, b) => a - b));
}

/** HF MinPLogitsWarper: drop tokens less likely than minP times the most likely one. */
export function minP(c: Candidates, minP: number): Candidates {
  if (minP <= 0 || c.ids.length <= 1) return c;
  let pmax = 0;
  for (const q of c.probs) if (q > pmax) pmax = q;
  const keep: number[] = [];
  for (let i = 0; i < c.probs.length; i++) if (c.probs[i] >= minP * pmax) keep.push(i);
  return renormalise(c, keep);
}

function renormalise(c: Candidates, keep: number[]): Candidates {
  if (keep.length === c.ids.length) return c;
  const ids = new Int32Array(keep.length);
  const probs = new Float64Array(keep.length);
  let sum = 0;
  keep.forEach((k, i) => {
    ids[i] = c.ids[k];
    probs[i] = c.probs[k];
    sum += probs[i];
  });
  for (let i = 0; i < probs.length; i++) probs[i] /= sum;
  return { ids, probs };
}
