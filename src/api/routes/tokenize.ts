// POST /tokenize and POST /detokenize, shaped as vLLM's: a text or a conversation -> token ids
// (and their strings), ids -> text. A conversation is planned exactly as a chat completion
// (images only in user messages, at most MAX_IMAGES, image URLs checked but not fetched: an
// image's positions do not depend on its pixels), then rendered and tokenized by the engine.
// Both work while the sessions load: they need only the package.

import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import type { Schemas } from '../openapi.js';
import { checkModel, planMessages } from '../validation.js';

export async function tokenizeRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.post('/tokenize', async (request): Promise<Schemas['TokenizeResponse']> => {
    const engine = ctx.host.inspect();
    const body = ctx.spec.parse('TokenizeRequest', request.body);
    checkModel(body.model, engine.model.id);
    const result = await engine.tokenize(
      'prompt' in body
        ? { type: 'text', text: body.prompt, addSpecialTokens: body.add_special_tokens ?? true }
        : {
            type: 'chat',
            messages: planMessages(body.messages, { maxImages: ctx.config.maxImages, remote: ctx.remoteImages }).messages,
            addGenerationPrompt: body.add_generation_prompt ?? true,
          },
    );
    return {
      count: result.ids.length,
      max_model_len: engine.model.maxContext,
      tokens: result.ids,
      token_strs: body.return_token_strs ? result.strings : null,
    };
  });

  app.post('/detokenize', async (request): Promise<Schemas['DetokenizeResponse']> => {
    const engine = ctx.host.inspect();
    const body = ctx.spec.parse('DetokenizeRequest', request.body);
    checkModel(body.model, engine.model.id);
    return { prompt: await engine.detokenize(body.tokens) };
  });
}
