// One request's generation state, from admission to `done`: its prefill embeddings, sampler,
// detokenizer and stop matcher, and the events it streams. The scheduler drives it; everything
// that turns a row of logits into text and events happens in `accept`.
//
// The answer text is the model layer's (ModelPort.createDetokenizer): the reference's decode
// of the generated ids, stripped as TinyLLaVA_Factory's CLI strips it when the package says so
// (manifest `tokenizer.strip_answer`); this module adds only stop strings.
// Under a structured-output grammar the text is the decode alone (no clean-up, no strip): the
// grammar fixed those bytes, spaces included.

import { performance } from 'node:perf_hooks';
import { EventChannel } from './event-channel.js';
import type { GrammarConstraint } from './grammar.js';
import { logprobsOf } from './logprobs.js';
import { blockKeys, promptPositionKeys, tokenKey, type PositionKey } from './prefix-hash.js';
import type { Detokenizer, ModelPort } from './model-port.js';
import { Sampler } from './sampler.js';
import { StopStringMatcher } from './stop-strings.js';
import type { FinishReason, GenerationEvent, GenerationRequest, GenerationTimings, TokenLogprob } from './types.js';

export type SequenceState = 'waiting' | 'prefill' | 'decode' | 'finished';

export interface PreparedPrompt {
  /** [length, D] the prompt's embeddings, images spliced in. */
  embeds: Float32Array;
  length: number;
  /** Text token ids (image markers included), for penalties and detokenizer context. */
  ids: number[];
  imageTokens: number;
  /**
   * The images' content keys, in marker order, for the prefix cache; absent when they were not
   * computed (then nothing from the first image on is cached).
   */
  imageKeys?: string[];
  timings: { imagePreprocess: number; visionEncoder: number };
}

export class Sequence {
  readonly seqId: number;
  readonly request: GenerationRequest;
  readonly events = new EventChannel<GenerationEvent>();
  readonly prompt: PreparedPrompt;
  /** Most tokens this request may generate: min(max_tokens, context left). */
  readonly maxNewTokens: number;
  state: SequenceState = 'waiting';
  /** Prompt positions already in the KV cache: loaded from the prefix cache or sent to the decoder. */
  prefilled = 0;
  /** Prompt positions loaded from the prefix cache at admission. */
  cachedTokens = 0;
  readonly generated: number[] = [];
  /** Set when the caller aborted or the deadline passed; the scheduler finishes it before the next step. */
  stopRequested: FinishReason | null = null;

  private readonly model: ModelPort;
  private readonly stopTokens: Set<number>;
  private readonly sampler: Sampler;
  private readonly detokenizer: Detokenizer;
  private readonly stops: StopStringMatcher;
  private readonly constraint: GrammarConstraint | null;
  private failed = false;
  private positionKeys: PositionKey[] | null = null;
  private promptBlocks: { size: number; keys: string[] } | null = null;
  private pendingIds: number[] = [];
  private pendingLogprobs: TokenLogprob[] = [];
  private readonly times: { arrival: number; queued: number; admitted: number; firstToken: number };

  constructor(
    seqId: number,
    request: GenerationRequest,
    prompt: PreparedPrompt,
    model: ModelPort,
    arrival: number,
    constraint: GrammarConstraint | null = null,
  ) {
    this.seqId = seqId;
    this.request = request;
    this.prompt = prompt;
    this.model = model;
    this.maxNewTokens = Math.min(request.maxTokens ?? Infinity, model.maxContext - prompt.length);
    this.stopTokens = new Set(model.stopTokenIds);
    const textIds = prompt.ids.filter((id) => id >= 0);
    this.constraint = constraint;
    this.sampler = new Sampler(request.sampling, textIds, constraint);
    this.detokenizer = model.createDetokenizer({ raw: constraint !== null });
    this.stops = new StopStringMatcher(request.stop);
    this.times = { arrival, queued: performance.now(), admitted: 0, firstToken: 0 };
  }

  /** Positions this sequence may occupy in the KV cache (the last token is never fed back). */
  get maxPositions(): number {
    return this.prompt.length + this.maxNewTokens;
  }

  get lastToken(): number {
    return this.generated[this.generated.length - 1];
  }

  /** Admitted with `cachedPositions` prompt positions already loaded from the prefix cache. */
  markAdmitted(now: number, cachedPositions = 0): void {
    this.state = 'prefill';
    this.times.admitted = now;
    // At least the last prompt position is run: its logits give the first token.
    if (cachedPositions >= this.prompt.length) throw new Error(`internal: ${cachedPositions} cached positions of a ${this.prompt.length}-position prompt`);
    this.prefilled = cachedPositions;
    this.cachedTokens = cachedPositions;
  }

  /**
   * The prefix cache's block keys to look up at admission: the prompt's full blocks before its
   * last position (which must run for the first token's logits).
   */
  lookupKeys(blockPositions: number): string[] {
    const blocks = Math.floor(Math.min(this.promptKeys().length, this.prompt.length - 1) / blockPositions);
    return this.promptBlockKeys(blockPositions).slice(0, blocks);
  }

  /**
   * The block keys to store when the sequence is freed: the prompt's, and those of the generated
   * tokens fed back after it (the last one never is); the runtime stores those within the KV
   * cache's length. None for a failed sequence, whose KV may be incomplete.
   */
  storeKeys(blockPositions: number): string[] {
    if (this.failed) return [];
    const prompt = this.promptKeys();
    const fed = prompt.length === this.prompt.length ? this.generated.slice(0, -1).map(tokenKey) : [];
    // The prompt's full blocks as hashed once for the lookup; the chain goes on from the last.
    const head = this.promptBlockKeys(blockPositions);
    const tail = prompt.slice(head.length * blockPositions);
    return [...head, ...blockKeys([...tail, ...fed], blockPositions, head[head.length - 1] ?? '')];
  }

  private promptKeys(): PositionKey[] {
    this.positionKeys ??= promptPositionKeys(this.prompt.ids, this.prompt.imageKeys, this.model.numImageTokens);
    return this.positionKeys;
  }

  /**
   * The chain keys of the prompt's full blocks, hashed once: admission asks again each turn while
   * the sequence waits for room, and release extends them.
   */
  private promptBlockKeys(blockPositions: number): string[] {
    if (this.promptBlocks?.size !== blockPositions) {
      this.promptBlocks = { size: blockPositions, keys: blockKeys(this.promptKeys(), blockPositions) };
    }
    return this.promptBlocks.keys;
  }

  /** Takes the next prompt chunk of at most `n` positions (a fresh copy: it is transferred). */
  takePrefillChunk(n: number): Float32Array {
    const D = this.prompt.embeds.length / this.prompt.length;
    const chunk = this.prompt.embeds.slice(this.prefilled * D, (this.prefilled + n) * D);
    this.prefilled += n;
    return chunk;
  }

  get prefillRemaining(): number {
    return this.prompt.length - this.prefilled;
  }

  /** Pending while the grammar's mask for the next token is being computed; null otherwise. */
  get maskReady(): Promise<void> | null {
    return this.constraint?.ready ?? null;
  }

  /**
   * Turns one row of logits into the next token, text and events; returns true when finished
   * (a grammar that fails also finishes the sequence, with an error).
   */
  accept(logits: Float32Array, now: number): boolean {
    try {
      return this.acceptToken(logits, now);
    } catch (err) {
      if (this.constraint?.error) {
        this.fail(this.constraint.error);
        return true;
      }
      throw err;
    }
  }

  private acceptToken(logits: Float32Array, now: number): boolean {
    // 1. choose the token
    const token = this.sampler.sample(logits);
    this.generated.push(token);
    if (this.generated.length === 1) this.times.firstToken = now;
    this.state = 'decode';

    // 2. EOS ends generation; it is counted but has no text, id or logprob in the stream. A
    //    grammar allows it only where the answer is complete (never with ignore_eos).
    if (this.stopTokens.has(token) && !this.request.ignoreEos) return this.finish('stop', now);
    // A grammar that is complete allows nothing more: the answer ends without a decoder step
    // spent on a stop token.
    const complete = this.constraint?.advance(token) ?? false;
    this.pendingIds.push(token);
    if (this.request.logprobs !== null) this.pendingLogprobs.push(this.tokenLogprob(logits, token));

    // 3. text: complete characters only, held back while it may start a stop string
    const r = this.stops.push(this.detokenizer.push(token));
    if (r.stopped) return this.finish('stop', now, r.text);
    // One delta per token, its text possibly empty (held back): consumers see every token when
    // it is generated (its logprob, the inter-token latency), even inside a long byte run.
    this.emit(r.text);
    if (complete) return this.finish('stop', now);

    // 4. length limit
    if (this.generated.length >= this.maxNewTokens) return this.finish('length', now);
    return false;
  }

  /**
   * Ends the stream with a last delta (the text still held back, or, after a stop string, the
   * text before it) and `done`. Every generated token but a final EOS is in exactly one delta.
   * Returns true, so that `accept` can `return this.finish(...)`.
   */
  finish(reason: FinishReason, now: number, beforeStopString?: string): boolean {
    if (this.state === 'finished') return true;
    this.state = 'finished';
    let rest = beforeStopString;
    if (rest === undefined) {
      const r = this.stops.push(this.detokenizer.flush());
      rest = r.text + (r.stopped ? '' : this.stops.flush());
    }
    if (rest.length > 0 || this.pendingIds.length > 0) this.emit(rest);
    const t = this.times;
    const since = (a: number, b: number): number => (a > 0 && b >= a ? (b - a) / 1000 : 0);
    const timings: GenerationTimings = {
      ...this.prompt.timings,
      queue: since(t.queued, t.admitted || now),
      prefill: since(t.admitted, t.firstToken),
      decode: since(t.firstToken, now),
      firstToken: since(t.arrival, t.firstToken),
    };
    this.events.push({
      type: 'done',
      finishReason: reason,
      usage: {
        promptTokens: this.prompt.length,
        completionTokens: this.generated.length,
        imageTokens: this.prompt.imageTokens,
        cachedTokens: this.cachedTokens,
      },
      timings,
    });
    this.events.close();
    return true;
  }

  /** Fails the stream with an error instead of `done`. */
  fail(error: unknown): void {
    this.state = 'finished';
    this.failed = true;
    this.events.fail(error);
  }

  private emit(text: string): void {
    const event: GenerationEvent = { type: 'delta', text, tokenIds: this.pendingIds };
    if (this.request.logprobs !== null) event.logprobs = this.pendingLogprobs;
    this.events.push(event);
    this.pendingIds = [];
    this.pendingLogprobs = [];
  }

  private tokenLogprob(logits: Float32Array, token: number): TokenLogprob {
    const r = logprobsOf(logits, token, this.request.logprobs ?? 0);
    const describe = (id: number): { token: string; bytes: number[] } => {
      const bytes = this.model.tokenBytes(id);
      return { token: Buffer.from(bytes).toString('utf8'), bytes };
    };
    return {
      ...describe(token),
      logprob: r.chosen.logprob,
      top: r.top.map((t) => ({ ...describe(t.id), logprob: t.logprob })),
    };
  }
}
