// A deterministic Engine for the API tests: no model, answers made of fixed tokens, with
// configurable delays and failures. It behaves like the real engine where the API depends on
// it: typed EngineErrors before the first event, finish reason `cancelled` after an abort,
// context checks, stop strings that are never emitted, and image bytes that must look like an
// image (JPEG or PNG magic) or fail with invalid_image.

import { EngineError } from '../../../src/engine/errors.js';
import {
  IMAGE_POSITION_ID,
  type Engine,
  type GenerationEvent,
  type GenerationRequest,
  type ModelInfo,
  type TokenizeInput,
  type TokenizeResult,
  type TokenLogprob,
} from '../../../src/engine/types.js';
import type { EngineStats } from '../../../src/engine/types.js';

export interface FakeEngineOptions {
  model?: Partial<ModelInfo>;
  /** The answer's tokens; an EOS follows them unless ignore_eos, which repeats them. */
  tokens?: string[];
  tokenDelayMs?: number;
  /** ready() resolves when this does (default: at once). */
  readyWhen?: Promise<void>;
  /** Thrown by generate() before any event. */
  failBeforeStart?: EngineError;
  /** Thrown after this many deltas. */
  failAfter?: { tokens: number; error: EngineError };
  /** More concurrent generations than this fail with `overloaded`. */
  maxRunning?: number;
  /** Awaited just before the first delta is yielded, which it then is whatever the signal says (a test makes the client vanish right then). */
  beforeFirstDelta?: () => void | Promise<void>;
}

/** The fake's vocabulary: id 0 is BOS, 1 is EOS, word k of WORDS is id k + 2. */
const WORDS = new Map<string, number>();
const wordId = (w: string): number => {
  if (!WORDS.has(w)) WORDS.set(w, WORDS.size + 2);
  return WORDS.get(w)!;
};
const idWord = (id: number): string | undefined => (id === 0 ? '<s>' : id === 1 ? '</s>' : [...WORDS].find(([, v]) => v === id)?.[0]);

export const DEFAULT_TOKENS = ['The', ' answer', ' is', ' forty', '-two', '.'];

export class FakeEngine implements Engine {
  readonly model: ModelInfo;
  /** Every request generate() was called with, in order. */
  readonly requests: GenerationRequest[] = [];
  /** Generations that ended because their signal was aborted. */
  cancelled = 0;
  running = 0;
  closed = false;
  private readonly options: FakeEngineOptions;

  constructor(options: FakeEngineOptions = {}) {
    this.options = options;
    this.model = { id: 'fake-vlm', maxContext: 256, numImageTokens: 16, ...options.model };
  }

  async ready(): Promise<void> {
    await this.options.readyWhen;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  stats(): EngineStats {
    return { running: this.running, waiting: 0, kvCache: { usedBytes: this.running * 10, reservedBytes: this.running * 25, capacityBytes: 100 } };
  }

  /** BOS, a token per word, EOS; each image num_image_tokens image positions (where the real engine puts them). */
  async tokenize(input: TokenizeInput): Promise<TokenizeResult> {
    const ids: number[] = [0];
    const strings: string[] = ['<s>'];
    const parts =
      input.type === 'text'
        ? [{ type: 'text' as const, text: input.text }]
        : input.messages.flatMap((m) => (typeof m.content === 'string' ? [{ type: 'text' as const, text: m.content }] : m.content));
    for (const p of parts) {
      if (p.type === 'text') {
        for (const w of p.text.split(/\s+/).filter(Boolean)) {
          ids.push(wordId(w));
          strings.push(w);
        }
      } else {
        for (let k = 0; k < this.model.numImageTokens; k++) {
          ids.push(IMAGE_POSITION_ID);
          strings.push('<image>');
        }
      }
    }
    ids.push(1);
    strings.push('</s>');
    if (ids.length >= this.model.maxContext) {
      throw new EngineError('context_length_exceeded', `the prompt is ${ids.length} tokens, the model's context is ${this.model.maxContext}`, {
        param: input.type === 'text' ? 'prompt' : 'messages',
      });
    }
    return { ids, strings };
  }

  async detokenize(ids: number[]): Promise<string> {
    const words = ids.map((id, i) => {
      const w = idWord(id);
      if (w === undefined) throw new EngineError('invalid_request', `token ${id} is not in the vocabulary`, { param: `tokens[${i}]` });
      return w;
    });
    return words.join(' ');
  }

  async *generate(request: GenerationRequest, signal?: AbortSignal): AsyncIterable<GenerationEvent> {
    this.requests.push(request);
    const o = this.options;
    if (o.failBeforeStart) throw o.failBeforeStart;
    if (o.maxRunning !== undefined && this.running >= o.maxRunning) throw new EngineError('overloaded', 'too many requests waiting (fake); retry later');
    const { promptTokens, images } = this.countPrompt(request);
    if (request.maxTokens !== null && promptTokens + request.maxTokens > this.model.maxContext) {
      throw new EngineError('context_length_exceeded', `prompt (${promptTokens}) + max_tokens (${request.maxTokens}) exceeds ${this.model.maxContext}`, {
        param: 'max_tokens',
      });
    }

    const answer = this.answer(request, promptTokens);
    this.running++;
    let generated = 0;
    try {
      for (const [i, token] of answer.tokens.entries()) {
        await sleep(o.tokenDelayMs ?? 0, signal);
        if (signal?.aborted) {
          this.cancelled++;
          yield this.done('cancelled', promptTokens, images, generated);
          return;
        }
        if (o.failAfter && i === o.failAfter.tokens) throw o.failAfter.error;
        if (i === 0) await o.beforeFirstDelta?.();
        generated++;
        const event: GenerationEvent = { type: 'delta', text: token, tokenIds: [1000 + i] };
        if (request.logprobs !== null) event.logprobs = [logprob(token, request.logprobs)];
        yield event;
      }
      yield this.done(answer.reason, promptTokens, images, answer.tokens.length + (answer.reason === 'stop' && !answer.byStopString ? 1 : 0));
    } finally {
      this.running--;
    }
  }

  private countPrompt(request: GenerationRequest): { promptTokens: number; images: number } {
    let words = 0;
    let images = 0;
    for (const m of request.messages) {
      const parts = typeof m.content === 'string' ? [{ type: 'text' as const, text: m.content }] : m.content;
      for (const p of parts) {
        if (p.type === 'text') words += p.text.split(/\s+/).filter(Boolean).length;
        else {
          const d = p.data;
          const jpeg = d[0] === 0xff && d[1] === 0xd8 && d[2] === 0xff;
          const png = d[0] === 0x89 && d[1] === 0x50 && d[2] === 0x4e && d[3] === 0x47;
          if (!jpeg && !png) throw new EngineError('invalid_image', 'image format not recognised (fake)', { param: 'messages', image: images });
          images++;
        }
      }
    }
    const promptTokens = words + images * this.model.numImageTokens + 2;
    if (promptTokens >= this.model.maxContext) {
      throw new EngineError('context_length_exceeded', `the prompt is ${promptTokens} tokens, the model's context is ${this.model.maxContext}`, {
        param: 'messages',
      });
    }
    return { promptTokens, images };
  }

  /** The tokens to stream and why they end: EOS (stop), max_tokens/context (length) or a stop string. */
  private answer(request: GenerationRequest, promptTokens: number): { tokens: string[]; reason: 'stop' | 'length'; byStopString: boolean } {
    const base = this.options.tokens ?? DEFAULT_TOKENS;
    const limit = Math.min(request.maxTokens ?? Infinity, this.model.maxContext - promptTokens);
    // With ignore_eos the answer repeats until a limit; without, EOS follows the base tokens.
    const eos = !request.ignoreEos && base.length < limit;
    const length = eos ? base.length : limit;
    const tokens = Array.from({ length }, (_, i) => base[i % base.length]);
    const reason: 'stop' | 'length' = eos ? 'stop' : 'length';
    // Stop strings: the text up to the first one, never the stop string itself.
    let text = '';
    for (let i = 0; i < tokens.length; i++) {
      const next = text + tokens[i];
      const hit = request.stop.map((s) => next.indexOf(s)).filter((k) => k >= 0);
      if (hit.length > 0) {
        const cut = Math.min(...hit) - text.length;
        const kept = tokens.slice(0, i);
        if (cut > 0) kept.push(tokens[i].slice(0, cut));
        return { tokens: kept, reason: 'stop', byStopString: true };
      }
      text = next;
    }
    return { tokens, reason, byStopString: false };
  }

  private done(
    finishReason: 'stop' | 'length' | 'cancelled',
    promptTokens: number,
    images: number,
    completionTokens: number,
  ): GenerationEvent {
    return {
      type: 'done',
      finishReason,
      usage: { promptTokens, completionTokens, imageTokens: images * this.model.numImageTokens, cachedTokens: 0 },
      timings: { imagePreprocess: 0.002 * images, visionEncoder: 0.003 * images, queue: 0.001, prefill: 0.004, decode: 0.01, firstToken: 0.01 },
    };
  }
}

function logprob(token: string, top: number): TokenLogprob {
  const bytes = [...Buffer.from(token, 'utf8')];
  return {
    token,
    logprob: -0.25,
    bytes,
    top: Array.from({ length: top }, (_, k) => ({ token: k === 0 ? token : `alt${k}`, logprob: -0.25 - k, bytes: k === 0 ? bytes : [...Buffer.from(`alt${k}`)] })),
  };
}

/** Resolves after `ms`, or at once when the signal aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
