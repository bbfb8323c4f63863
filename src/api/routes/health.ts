// Probes and identity: GET /health (liveness: the process answers, even while loading),
// GET /ready (readiness: 200 only when the model is loaded and warmed up and the server is not
// draining) and GET /version.

import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import type { Schemas } from '../openapi.js';

export async function healthRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.get('/health', async (): Promise<Schemas['Health']> => ({ status: 'ok' }));

  app.get('/ready', async (_request, reply): Promise<Schemas['Readiness']> => {
    const status = ctx.host.phase;
    if (status === 'ready') return { status };
    reply.status(503).header('retry-after', String(ctx.config.retryAfterSeconds));
    const message = ctx.host.failureMessage;
    return message === null ? { status } : { status, message };
  });

  app.get('/version', async (): Promise<Schemas['Version']> => ({
    name: ctx.version.name,
    version: ctx.version.version,
    node: process.version,
    model: ctx.host.engine?.model.id ?? null,
  }));
}
