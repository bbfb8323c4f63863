// A streamed chat completion as SSE text, in OpenAI's order: per choice a role chunk, content
// chunks and a finish chunk; then, with include_usage, one chunk with `choices: []` and the
// usage; then [DONE]. A failure after the response started becomes one error event, still
// followed by [DONE], so that clients always see the stream end cleanly.

import type { GenerationEvent } from '../engine/types.js';
import { ChunkMaker, wireFinishReason } from './chat-response.js';
import type { ErrorResponse } from './errors.js';
import type { ChoiceEvent } from './generation.js';
import { SSE_DONE, sseData } from './sse.js';

type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

export async function* chatStream(
  first: ChoiceEvent | null,
  rest: AsyncGenerator<ChoiceEvent>,
  maker: ChunkMaker,
  options: { includeUsage: boolean; onError: (err: unknown) => ErrorResponse },
): AsyncGenerator<string> {
  const started = new Set<number>();
  const done: DoneEvent[] = [];

  function* frames({ index, event }: ChoiceEvent): Generator<string> {
    if (!started.has(index)) {
      started.add(index);
      yield sseData(maker.role(index));
    }
    if (event.type === 'delta') {
      if (event.text.length > 0 || (event.logprobs?.length ?? 0) > 0) yield sseData(maker.content(index, event.text, event.logprobs));
    } else if (event.finishReason !== 'cancelled') {
      done[index] = event;
      yield sseData(maker.finish(index, wireFinishReason(event.finishReason)));
    }
  }

  try {
    try {
      if (first) yield* frames(first);
      for await (const event of rest) yield* frames(event);
      if (options.includeUsage) yield sseData(maker.usage(done));
    } catch (err) {
      yield sseData(options.onError(err));
    }
    yield SSE_DONE;
  } finally {
    // Closed early (the client went away) while still on the first event's chunks: `rest` was
    // never iterated, so nothing else would end the generation behind it.
    await rest.return(undefined);
  }
}
