// Chooses the next token of one sequence. One Sampler per request: it owns the request's seeded
// PRNG and the token counts the penalties need, so the choice depends only on the request
// (and the logits), never on which other requests shared the batch.
//
// Order of operations, as in HF generate: a structured-output grammar's mask, repetition
// penalty, presence/frequency penalties, then (unless greedy) temperature, top-k, top-p, min-p,
// and a draw from what survives.

import type { SamplingParams } from './types.js';
import {
  applyPresenceFrequencyPenalty,
  applyRepetitionPenalty,
  argmax,
  minP,
  softmaxOver,
  topKIds,
  topP,
  type TokenCounts,
} from './logits-processors.js';
import { createRng, randomSeed, type Rng } from './rng.js';

/** A constraint on the next token: sets the logits of forbidden tokens to -Infinity, in place. */
export interface LogitsMask {
  apply(logits: Float32Array): void;
}

export class Sampler {
  private readonly params: SamplingParams;
  private readonly mask: LogitsMask | null;
  private readonly rng: Rng;
  /** Prompt text tokens plus generated tokens: what the repetition penalty looks at. */
  private readonly seen: TokenCounts = new Map();
  /** Generated tokens only: what presence/frequency penalties look at. */
  private readonly generated: TokenCounts = new Map();

  /**
   * @param penaltyContext the prompt's text token ids (image positions excluded), which the
   *   repetition penalty also covers, as vLLM does.
   * @param mask a structured-output grammar, applied to each row before anything else.
   */
  constructor(params: SamplingParams, penaltyContext: readonly number[] = [], mask: LogitsMask | null = null) {
    this.params = params;
    this.mask = mask;
    this.rng = createRng(params.seed ?? randomSeed());
    for (const id of penaltyContext) if (id >= 0) increment(this.seen, id);
  }

  get greedy(): boolean {
    return this.params.temperature === 0;
  }

  /**
   * Picks a token from one row of raw logits [V] and records it. The row is left untouched,
   * except by a mask, which writes -Infinity into it: logprobs then describe the constrained
   * distribution, as vLLM's do.
   */
  sample(logits: Float32Array): number {
    this.mask?.apply(logits);
    const p = this.params;
    const penalised = p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
    const scores = penalised ? Float32Array.from(logits) : logits;
    applyRepetitionPenalty(scores, this.seen, p.repetitionPenalty);
    applyPresenceFrequencyPenalty(scores, this.generated, p.presencePenalty, p.frequencyPenalty);

    const token = this.greedy ? argmax(scores) : this.draw(scores);
    this.record(token);
    return token;
  }

  /** Records a token chosen elsewhere (e.g. forced), so that penalties see it. */
  record(token: number): void {
    increment(this.seen, token);
    increment(this.generated, token);
  }

  private draw(scores: Float32Array): number {
    const p = this.params;
    let c = softmaxOver(scores, topKIds(scores, p.topK), p.temperature);
    c = topP(c, p.topP);
    c = minP(c, p.minP);
    // Inverse-CDF draw over the survivors in id order; falls back to the last one if rounding
    // leaves u just above the total.
    const u = this.rng.next();
    let cumulative = 0;
    for (let i = 0; i < c.ids.length; i++) {
      cumulative += c.probs[i];
      if (u < cumulative) return c.ids[i];
    }
    return c.ids[c.ids.length - 1];
  }
}

function increment(counts: TokenCounts, id: number): void {
  counts.set(id, (counts.get(id) ?? 0) + 1);
}
