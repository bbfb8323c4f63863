// The request the in-process engine measurements send: one image and the prompt, greedy, a
// fixed length (ignore_eos), optionally under a structured-output constraint.

import type { GenerationRequest, OutputConstraint } from '../src/engine/types.js';

export function benchRequest(id: string, image: Uint8Array, prompt: string, outputTokens: number, constraint: OutputConstraint | null = null): GenerationRequest {
  return {
    id,
    messages: [{ role: 'user', content: [{ type: 'image', data: image }, { type: 'text', text: prompt }] }],
    sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 },
    maxTokens: outputTokens,
    stop: [],
    ignoreEos: true,
    logprobs: null,
    deadlineMs: null,
    constraint,
  };
}
