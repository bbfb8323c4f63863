// GET /v1/models and GET /v1/models/{model}: the one served model, with vLLM's max_model_len so
// that clients can size prompts.

import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import { ApiError } from '../errors.js';
import type { Schemas } from '../openapi.js';

export async function modelsRoute(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const served = (): Schemas['Model'] => {
    // The model's name is known as soon as its package is read, before the sessions load.
    const engine = ctx.host.engine;
    if (!engine) throw new ApiError('model_not_ready', 'the model is still loading; retry shortly');
    return { id: engine.model.id, object: 'model', created: ctx.startedAt, owned_by: ctx.version.name, max_model_len: engine.model.maxContext };
  };

  app.get('/v1/models', async (): Promise<Schemas['ModelList']> => ({ object: 'list', data: [served()] }));

  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request): Promise<Schemas['Model']> => {
    const model = served();
    if (request.params.model !== model.id) {
      throw new ApiError('model_not_found', `model ${JSON.stringify(request.params.model.slice(0, 64))} is not served here; this server serves ${JSON.stringify(model.id)}`, {
        param: 'model',
      });
    }
    return model;
  });
}
