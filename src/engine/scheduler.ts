// Continuous batching: one loop owns the decoder and runs steps over whatever sequences are
// active; requests join and leave between steps.
//
// Each turn of the loop:
//   1. finish sequences that were cancelled or ran past their deadline, and free their KV
//   2. admit waiting sequences, first come first served, while the batch and KV cache have room;
//      a sequence starts with the longest prefix of its prompt the prefix cache holds
//   3. prefill: one step over the next prompt chunks of admitted sequences (left-padded to the
//      longest chunk, at most `prefillChunkTokens` padded positions in all)
//   4. decode: one step over every sequence that has a token to feed back (one position each)
//   5. each row's logits -> token, text, events (a constrained row first waits for its grammar
//      mask, computed off the event loop during the step); finished sequences leave
// Prefill and decode are separate decoder calls because a batch pads every row to its longest
// row: one long prompt chunk in a decode batch would multiply the decode work by its length.
// A sequence that leaves hands its blocks' keys to the runner, which stores its KV in the prefix
// cache (src/runtime/prefix-cache.ts) before freeing it.

import { performance } from 'node:perf_hooks';
import { KvCacheFullError, type KvCacheUsage } from '../runtime/kv-cache.js';
import type { ModelRunner, StepRowRequest } from '../runtime/model-runner.js';
import { EngineError, toEngineError } from './errors.js';
import type { Sequence } from './sequence.js';

export interface SchedulerLimits {
  /** Most sequences in prefill or decode at once. */
  maxBatchSize: number;
  /** Most requests waiting for admission beyond the free batch slots; past it requests fail fast with `overloaded`. */
  maxWaiting: number;
  /** Padded positions (rows x longest chunk) per prefill step. */
  prefillChunkTokens: number;
  /** Positions per prefix-cache block; null when the runner has no prefix cache. */
  prefixBlockPositions?: number | null;
}

export type StepRunner = Pick<ModelRunner, 'allocate' | 'free' | 'step'>;

export class Scheduler {
  private readonly runner: StepRunner;
  private readonly limits: SchedulerLimits;
  private readonly waiting: Sequence[] = [];
  private readonly active: Sequence[] = []; // admitted, in admission order
  private wake: (() => void) | null = null;
  private signalled = false;
  private stopped = false;
  private loopDone: Promise<void> | null = null;
  private kvUsage: KvCacheUsage | null = null;
  /** Decoder calls and the rows they carried, for metrics (mean batch size = rows / steps). */
  readonly counters = { prefillSteps: 0, prefillRows: 0, decodeSteps: 0, decodeRows: 0 };
  /** Prompt positions of admitted sequences looked up in the prefix cache, and those found there. */
  readonly prefixCounters = { queries: 0, hits: 0 };

  constructor(runner: StepRunner, limits: SchedulerLimits) {
    this.runner = runner;
    this.limits = limits;
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.active.length;
  }

  /** The KV cache usage reported by the last step or allocation. */
  get kvCacheUsage(): KvCacheUsage | null {
    return this.kvUsage;
  }

  /**
   * Whether `ahead` more sequences (queued or about to be) leave room for one more: a sequence
   * that a free batch slot will take at the next turn is not waiting, so the queue may hold
   * maxWaiting beyond the free slots (with MAX_WAITING 0, an idle server still serves).
   */
  hasRoom(ahead = 0): boolean {
    const freeSlots = Math.max(0, this.limits.maxBatchSize - this.active.length);
    return this.waiting.length + ahead < this.limits.maxWaiting + freeSlots;
  }

  /** Queues a prepared sequence; throws `overloaded` when the waiting queue is full. */
  submit(seq: Sequence): void {
    if (this.stopped) throw new EngineError('shutting_down', 'the engine is shutting down');
    if (!this.hasRoom()) {
      throw new EngineError('overloaded', `too many requests waiting (${this.limits.maxWaiting}); retry later`);
    }
    this.waiting.push(seq);
    this.loopDone ??= this.loop();
    this.notify();
  }

  /** Wakes the loop, e.g. after a sequence was cancelled while nothing else ran. */
  notify(): void {
    this.signalled = true;
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Stops admitting; cancels everything queued or running; resolves when the loop has exited. */
  async close(): Promise<void> {
    this.stopped = true;
    for (const seq of [...this.waiting, ...this.active]) seq.stopRequested ??= 'cancelled';
    this.notify();
    await this.loopDone;
  }

  private async loop(): Promise<void> {
    for (;;) {
      try {
        if (await this.turn()) return;
      } catch (err) {
        // A bug in the loop must not leave callers waiting forever.
        const error = toEngineError(err);
        for (const seq of [...this.waiting, ...this.active]) {
          seq.fail(error);
          await this.release(seq);
        }
      }
    }
  }

  /** One turn of the loop; true when the loop should exit. */
  private async turn(): Promise<boolean> {
    this.signalled = false; // notifications from here on are not lost while we await below
    await this.reap();
    if (this.stopped && this.active.length === 0 && this.waiting.length === 0) return true;
    await this.admit();

    const prefill = this.prefillRows();
    if (prefill.length > 0) await this.step(prefill);
    const decode = this.active.filter((s) => s.state === 'decode' && s.stopRequested === null);
    if (decode.length > 0) await this.step(decode.map((seq) => ({ seq, chunk: 0 })));

    if (prefill.length === 0 && decode.length === 0 && !this.signalled) {
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    return false;
  }

  /**
   * Finishes sequences whose caller aborted or whose deadline passed, queued or running. A
   * deadline that passes before the first token is an error (`deadline_exceeded`, a retryable
   * 503), not an empty answer that looks complete.
   */
  private async reap(): Promise<void> {
    const now = performance.now();
    for (const list of [this.waiting, this.active]) {
      for (const seq of [...list]) {
        if (seq.stopRequested === null && seq.state !== 'finished') continue;
        if (seq.state !== 'finished') {
          if (seq.stopRequested === 'deadline' && seq.generated.length === 0) {
            seq.fail(new EngineError('deadline_exceeded', 'the request timed out before its first token; retry later'));
          } else {
            seq.finish(seq.stopRequested!, now);
          }
        }
        await this.release(seq);
      }
    }
  }

  private async admit(): Promise<void> {
    while (this.waiting.length > 0 && this.active.length < this.limits.maxBatchSize && !this.stopped) {
      const seq = this.waiting[0];
      const B = this.limits.prefixBlockPositions ?? null;
      let cached = 0;
      try {
        const r = await this.runner.allocate(seq.seqId, seq.maxPositions, B === null ? undefined : seq.lookupKeys(B));
        this.kvUsage = r.usage;
        cached = r.cachedPositions;
      } catch (err) {
        if (err instanceof KvCacheFullError && this.active.length > 0) return; // wait for room
        // Nothing else holds the cache, so this request can never fit as asked.
        this.waiting.shift();
        seq.fail(
          err instanceof KvCacheFullError
            ? new EngineError(
                'context_length_exceeded',
                `prompt + max_tokens = ${seq.maxPositions} positions do not fit the KV cache (${err.message}); lower max_tokens`,
                { param: 'max_tokens' },
              )
            : new EngineError('model_error', `KV cache allocation failed: ${(err as Error).message}`, { cause: err }),
        );
        continue;
      }
      this.waiting.shift();
      seq.markAdmitted(performance.now(), cached);
      if (B !== null) {
        this.prefixCounters.queries += seq.prompt.length;
        this.prefixCounters.hits += cached;
      }
      this.active.push(seq);
    }
  }

  /** The next prompt chunks, in admission order, within the prefill budget. */
  private prefillRows(): { seq: Sequence; chunk: number }[] {
    const budget = this.limits.prefillChunkTokens;
    const rows: { seq: Sequence; chunk: number }[] = [];
    let longest = 0;
    for (const seq of this.active) {
      if (seq.state !== 'prefill' || seq.stopRequested !== null) continue;
      const chunk = Math.min(seq.prefillRemaining, budget);
      const padded = (rows.length + 1) * Math.max(longest, chunk);
      if (rows.length > 0 && padded > budget) break;
      rows.push({ seq, chunk });
      longest = Math.max(longest, chunk);
    }
    return rows;
  }

  /** One decoder call; rows with chunk > 0 send prompt embeddings, the others their last token. */
  private async step(rows: { seq: Sequence; chunk: number }[]): Promise<void> {
    const requests: StepRowRequest[] = rows.map(({ seq, chunk }) =>
      chunk > 0
        ? { seqId: seq.seqId, embeds: seq.takePrefillChunk(chunk) }
        : { seqId: seq.seqId, ids: Int32Array.of(seq.lastToken) },
    );
    const isPrefill = rows[0].chunk > 0;
    this.counters[isPrefill ? 'prefillSteps' : 'decodeSteps']++;
    this.counters[isPrefill ? 'prefillRows' : 'decodeRows'] += rows.length;
    let result;
    try {
      result = await this.runner.step(requests);
    } catch (err) {
      const error = new EngineError('model_error', `decoder step failed: ${(err as Error).message}`, { cause: err });
      for (const { seq } of rows) seq.fail(error);
      for (const { seq } of rows) await this.release(seq);
      return;
    }
    this.kvUsage = result.usage;
    const V = result.vocabSize;
    // Grammar masks were computed off the event loop while the decoder ran; wait for any left.
    const masks = rows.map(({ seq }) => seq.maskReady).filter((p) => p !== null);
    if (masks.length > 0) await Promise.all(masks);
    const now = performance.now();
    for (const [b, { seq }] of rows.entries()) {
      if (seq.state === 'prefill' && seq.prefillRemaining > 0) continue; // mid-prompt: nothing to sample
      const finished = seq.accept(result.logits.subarray(b * V, (b + 1) * V), now);
      if (finished) await this.release(seq);
    }
  }

  /** Takes a finished sequence out of the queues and frees its KV cache (storing its blocks in the prefix cache). */
  private async release(seq: Sequence): Promise<void> {
    const w = this.waiting.indexOf(seq);
    if (w >= 0) {
      this.waiting.splice(w, 1);
      return; // never allocated
    }
    const a = this.active.indexOf(seq);
    if (a < 0) return;
    this.active.splice(a, 1);
    try {
      const B = this.limits.prefixBlockPositions ?? null;
      this.kvUsage = await this.runner.free(seq.seqId, B === null ? undefined : seq.storeKeys(B));
    } catch {
      // the runner is gone; nothing left to free
    }
  }
}
