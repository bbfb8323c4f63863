// Runs a plan's choices on the engine and yields their events, tagged with the choice index, in
// the order they happen. Streaming and non-streaming responses both consume this one stream.
//
// - n > 1: each choice is its own engine request; their streams are merged as events arrive.
// - Cancellation: aborting the signal cancels every choice; the engine then ends each with
//   finish reason `cancelled`, which becomes the signal's reason (an ApiError) thrown here, so
//   that a choice is never reported as finished when it was cut short.
// - Metrics: token gaps as streamed and, per finished choice, the engine's timings.

import { performance } from 'node:perf_hooks';
import { isEngineError } from '../engine/errors.js';
import type { Engine, GenerationEvent, GenerationRequest } from '../engine/types.js';
import { ApiError, fromEngineError } from './errors.js';
import type { ApiMetrics } from './metrics.js';

export interface ChoiceEvent {
  index: number;
  event: GenerationEvent;
}

export interface RunOptions {
  signal: AbortSignal;
  metrics: ApiMetrics;
  /** performance.now() when the HTTP request arrived. */
  arrival: number;
  imagesPerChoice: number;
  /** Each image's request field, in prompt order: an image the engine refuses is reported there. */
  imageParams?: readonly string[];
}

export function runChoices(engine: Engine, requests: GenerationRequest[], options: RunOptions): AsyncGenerator<ChoiceEvent> {
  const streams = requests.map((r, i) => observed(i, engine.generate(r, options.signal), options));
  return streams.length === 1 ? streams[0] : merge(streams);
}

async function* observed(index: number, events: AsyncIterable<GenerationEvent>, o: RunOptions): AsyncGenerator<ChoiceEvent> {
  try {
    yield* timed(index, events, o);
  } catch (err) {
    if (isEngineError(err) && err.image !== null) throw fromEngineError(err, o.imageParams?.[err.image] ?? err.param);
    throw err;
  }
}

async function* timed(index: number, events: AsyncIterable<GenerationEvent>, o: RunOptions): AsyncGenerator<ChoiceEvent> {
  let last: number | null = null;
  for await (const event of events) {
    const now = performance.now();
    if (event.type === 'delta') {
      // The first delta's wait is the time to first token, not a gap between tokens.
      if (last !== null && event.tokenIds.length > 0) o.metrics.tokensStreamed((now - last) / 1000, event.tokenIds.length);
      if (event.tokenIds.length > 0) last = now;
    } else {
      o.metrics.generationDone(event, (now - o.arrival) / 1000, o.imagesPerChoice);
      if (event.finishReason === 'cancelled') throw cancelledBy(o.signal);
    }
    yield { index, event };
  }
}

function cancelledBy(signal: AbortSignal): ApiError {
  return signal.reason instanceof ApiError ? signal.reason : new ApiError('cancelled', 'the request was cancelled');
}

/** Interleaves several streams as their items arrive; the first error ends all of them. */
async function* merge<T>(streams: AsyncGenerator<T>[]): AsyncGenerator<T> {
  const pending = new Map<number, Promise<{ i: number; r: IteratorResult<T> }>>();
  const pull = (i: number): void => {
    pending.set(i, streams[i].next().then((r) => ({ i, r })));
  };
  streams.forEach((_, i) => pull(i));
  try {
    while (pending.size > 0) {
      const { i, r } = await Promise.race(pending.values());
      if (r.done) {
        pending.delete(i);
        continue;
      }
      pull(i);
      yield r.value;
    }
  } finally {
    // Early exit or an error: close the streams still running (each cancels its engine request).
    // Their pending next() calls are left to settle on their own.
    for (const i of pending.keys()) {
      pending.get(i)!.catch(() => undefined);
      void streams[i].return(undefined).catch(() => undefined);
    }
  }
}
