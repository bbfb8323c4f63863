// POST /v1/chat/completions, JSON or multipart/form-data, streamed or not. The handler only
// wires the steps together: body -> schema -> plan -> engine -> response.

import { performance } from 'node:perf_hooks';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { chatStream } from '../chat-stream.js';
import { ChunkMaker, collectCompletion, completionId } from '../chat-response.js';
import type { ApiContext } from '../context.js';
import { ApiError, errorBody, toApiError, type ErrorResponse } from '../errors.js';
import { runChoices, type ChoiceEvent } from '../generation.js';
import { readMultipart } from '../multipart.js';
import { writeEventStream } from '../sse.js';
import { planChatCompletion } from '../validation.js';

export async function chatCompletionsRoute(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { config, host, spec, metrics } = ctx;
  // Parts are read by the handler (readMultipart), with limits, as they stream in.
  await app.register(multipart, { throwFileSizeLimit: true });

  app.post('/v1/chat/completions', {
    // Refuse while loading or draining before the body (possibly megabytes of images) is read.
    onRequest: async () => void host.acquire(),
    handler: async (request, reply) => {
      const arrival = performance.now();
      const engine = host.acquire();
      // From here on, a client that goes away cancels what its request is waiting for: the
      // rest of an upload, image fetches, the queue, the generation.
      const abort = cancelOnDisconnect(reply, ctx);
      const { body, uploads } = request.isMultipart()
        ? await readMultipart(request, spec, config)
        : { body: request.body, uploads: undefined };
      const wire = spec.parse('ChatCompletionRequest', body);
      const plan = planChatCompletion(wire, {
        requestId: request.id,
        modelId: engine.model.id,
        maxImages: config.maxImages,
        requestTimeoutSeconds: config.requestTimeoutSeconds,
        uploads,
        remote: ctx.remoteImages,
      });
      if (plan.remote.length > 0) await ctx.remoteImages.fetchAll(plan.remote, abort.signal);

      const events = runChoices(engine, plan.requests, {
        signal: abort.signal,
        metrics,
        arrival,
        imagesPerChoice: plan.imageCount,
        imageParams: plan.imageParams,
      });
      const meta = { id: completionId(), model: plan.model, created: Math.floor(Date.now() / 1000) };
      if (!plan.stream) {
        return collectCompletion(events, { ...meta, choices: plan.requests.length, logprobs: plan.logprobs });
      }

      // Wait for the first event before committing to 200: a refused image, a prompt over the
      // context or a full queue still get their own status code.
      const first: IteratorResult<ChoiceEvent> = await events.next();
      const sse = chatStream(first.done ? null : first.value, events, new ChunkMaker({ ...meta, includeUsage: plan.includeUsage }), {
        includeUsage: plan.includeUsage,
        onError: (err) => streamError(err, request, ctx),
      });
      await writeEventStream(reply, sse);
      return reply;
    },
  });
}

/**
 * Ties a generation to its response: when the connection closes before the response finished
 * (the client went away), the generation is cancelled. The in-flight registration ends with the
 * response either way.
 */
function cancelOnDisconnect(reply: FastifyReply, ctx: ApiContext): AbortController {
  const abort = new AbortController();
  const release = ctx.host.track(abort);
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort(new ApiError('cancelled', 'the client disconnected'));
    release();
  });
  return abort;
}

/** A failure after the 200 went out: logged, counted, and sent as one error event. */
function streamError(err: unknown, request: FastifyRequest, ctx: ApiContext): ErrorResponse {
  const e = toApiError(err, ctx.config);
  if (e.code !== 'cancelled') ctx.metrics.error(e.type, e.code);
  if (e.status >= 500 && !e.retry) request.log.error({ err }, 'generation failed after the response started');
  else request.log.info({ code: e.code, reason: e.message }, 'stream ended with an error event');
  return errorBody(e, request.id);
}
