// GET /metrics: the Prometheus text exposition of the app's registry.

import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';

export async function metricsRoute(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    const body = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(body);
  });
}
