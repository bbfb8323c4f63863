// GET /v1/models: the one served model, with vLLM's max_model_len so that clients can size prompts.

import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import { ApiError } from '../errors.js';
import type { Schemas } from '../openapi.js';

export async function modelsRoute(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.get('/v1/models', async (): Promise<Schemas['ModelList']> => {
    // The model's name is known as soon as its package is read, before the sessions load.
    const engine = ctx.host.engine;
    if (!engine) throw new ApiError('model_not_ready', 'the model is still loading; retry shortly');
    return {
      object: 'list',
      data: [{ id: engine.model.id, object: 'model', created: ctx.startedAt, owned_by: ctx.version.name, max_model_len: engine.model.maxContext }],
    };
  });
}
