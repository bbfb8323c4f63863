// Engine events -> OpenAI's response objects: the whole `chat.completion`, or the sequence of
// `chat.completion.chunk`s. Shapes come from the types generated from openapi.yaml.

import { randomUUID } from 'node:crypto';
import type { FinishReason as EngineFinishReason, GenerationEvent, TokenLogprob as EngineLogprob } from '../engine/types.js';
import type { ChoiceEvent } from './generation.js';
import type { Schemas } from './openapi.js';

type ChatCompletion = Schemas['ChatCompletion'];
type ChatCompletionChunk = Schemas['ChatCompletionChunk'];
type Usage = Schemas['Usage'];
type FinishReason = Schemas['FinishReason'];
type TokenLogprob = Schemas['TokenLogprob'];
type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

/** Only `stop` and `length` exist on the wire; a request timeout truncates like max_tokens. */
export function wireFinishReason(reason: Exclude<EngineFinishReason, 'cancelled'>): FinishReason {
  return reason === 'stop' ? 'stop' : 'length';
}

// OpenAI writes -9999 for a probability that is 0; JSON has no -Infinity.
const logprobValue = (x: number): number => (Number.isFinite(x) ? x : -9999);

export function wireLogprobs(list: EngineLogprob[]): TokenLogprob[] {
  return list.map((t) => ({
    token: t.token,
    logprob: logprobValue(t.logprob),
    bytes: t.bytes,
    top_logprobs: t.top.map((a) => ({ token: a.token, logprob: logprobValue(a.logprob), bytes: a.bytes })),
  }));
}

/**
 * Usage over all choices: the prompt counts once, as OpenAI counts it; its cached positions are
 * those every choice took from the prefix cache (each choice is its own engine request).
 */
export function wireUsage(done: DoneEvent[]): Usage {
  const prompt = done[0]?.usage.promptTokens ?? 0;
  const completion = done.reduce((sum, d) => sum + d.usage.completionTokens, 0);
  const cached = done.length === 0 ? 0 : Math.min(...done.map((d) => d.usage.cachedTokens));
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached, image_tokens: done[0]?.usage.imageTokens ?? 0 },
  };
}

export function completionId(): string {
  return `chatcmpl-${randomUUID().replace(/-/g, '')}`;
}

/** Collects a whole stream into one `chat.completion`. */
export async function collectCompletion(
  events: AsyncIterable<ChoiceEvent>,
  meta: { id: string; model: string; created: number; choices: number; logprobs: boolean },
): Promise<ChatCompletion> {
  const text: string[][] = Array.from({ length: meta.choices }, () => []);
  const logprobs: EngineLogprob[][] = Array.from({ length: meta.choices }, () => []);
  const done: DoneEvent[] = [];
  for await (const { index, event } of events) {
    if (event.type === 'delta') {
      text[index].push(event.text);
      if (event.logprobs) logprobs[index].push(...event.logprobs);
    } else done[index] = event;
  }
  // The engine promises exactly one `done` per generation; a response without it would lie.
  if (done.filter(Boolean).length !== meta.choices) throw new Error('a generation ended without its done event');
  return {
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: null,
    choices: done.map((d, index) => ({
      index,
      message: { role: 'assistant', content: text[index].join(''), refusal: null },
      finish_reason: wireFinishReason(d.finishReason as Exclude<EngineFinishReason, 'cancelled'>),
      logprobs: meta.logprobs ? { content: wireLogprobs(logprobs[index]) } : null,
    })),
    usage: wireUsage(done),
  };
}

/** Makes the chunks of one streamed completion; OpenAI's order is the caller's job. */
export class ChunkMaker {
  constructor(private readonly meta: { id: string; model: string; created: number; includeUsage: boolean }) {}

  private chunk(choices: ChatCompletionChunk['choices'], usage?: Usage): ChatCompletionChunk {
    const c: ChatCompletionChunk = {
      id: this.meta.id,
      object: 'chat.completion.chunk',
      created: this.meta.created,
      model: this.meta.model,
      system_fingerprint: null,
      choices,
    };
    // With include_usage, OpenAI puts `usage: null` on every chunk but the last.
    if (this.meta.includeUsage) c.usage = usage ?? null;
    return c;
  }

  role(index: number): ChatCompletionChunk {
    return this.chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  }

  content(index: number, text: string, logprobs: EngineLogprob[] | undefined): ChatCompletionChunk {
    return this.chunk([{ index, delta: { content: text }, logprobs: logprobs ? { content: wireLogprobs(logprobs) } : null, finish_reason: null }]);
  }

  finish(index: number, reason: FinishReason): ChatCompletionChunk {
    return this.chunk([{ index, delta: {}, logprobs: null, finish_reason: reason }]);
  }

  usage(done: DoneEvent[]): ChatCompletionChunk {
    return this.chunk([], wireUsage(done));
  }
}
