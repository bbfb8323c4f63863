// Small statistics helpers for the benchmark: percentiles and medians over samples.

/** The p-th percentile (0..100) by linear interpolation between closest ranks; NaN when empty. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export function median(samples: readonly number[]): number {
  return percentile(samples, 50);
}

/** Rounds for reports: 3 significant digits, keeping integers of 1000 and more whole. */
export function round(x: number): number {
  if (!Number.isFinite(x)) return x;
  if (Math.abs(x) >= 1000) return Math.round(x);
  return Number(x.toPrecision(3));
}

/**
 * Aggregate decode rate while every stream is decoding at once: the window runs from the last
 * stream's first token to the first stream's last token, and counts the tokens of all streams
 * that arrive inside it. Null when the streams never decode together (e.g. each one's prefill
 * outlasts the others' answers). This is the batch-N decode speed, free of prefill time.
 */
export function steadyDecodeRate(tokenTimes: readonly (readonly number[])[]): number | null {
  const streams = tokenTimes.filter((t) => t.length > 0);
  if (streams.length === 0) return null;
  const start = Math.max(...streams.map((t) => t[0]));
  const end = Math.min(...streams.map((t) => t[t.length - 1]));
  if (!(end > start)) return null;
  const inside = streams.reduce((n, t) => n + t.filter((x) => x > start && x <= end).length, 0);
  return inside / (end - start);
}
