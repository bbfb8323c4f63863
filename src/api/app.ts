// The HTTP app: a fastify instance with our plugin (request ids, API keys, the error envelope,
// the routes), built from the configuration and an engine host, never listening: src/cli/serve.ts
// listens, tests use inject() or listen on port 0.

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { bearerAuth } from './auth.js';
import type { ApiConfig, ApiContext, ServerVersion } from './context.js';
import type { EngineHost } from './engine-host.js';
import { ApiError, errorBody, toApiError } from './errors.js';
import { ApiMetrics } from './metrics.js';
import { openApiSpec } from './openapi.js';
import { REQUEST_ID_HEADER, requestId } from './request-id.js';
import { chatCompletionsRoute } from './routes/chat-completions.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoute } from './routes/metrics.js';
import { modelsRoute } from './routes/models.js';

export interface AppOptions {
  config: ApiConfig;
  host: EngineHost;
  version?: ServerVersion;
  /** fastify's logger option; false (the default) for none. */
  logger?: FastifyServerOptions['logger'];
  /** Node process metrics (CPU, memory, event loop) on /metrics; default true. */
  processMetrics?: boolean;
}

/** pino settings for the server's logs: requests are logged without headers or bodies (no keys, no image bytes). */
export function loggerOptions(level: string): FastifyServerOptions['logger'] {
  return {
    level,
    redact: ['req.headers.authorization', 'req.headers.cookie'],
    serializers: {
      req: (req: FastifyRequest) => ({ method: req.method, url: req.url, remoteAddress: req.ip }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
  };
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.config.bodyLimitBytes,
    genReqId: requestId,
    requestIdHeader: false,
    // While closing, new requests get 503 and keep-alive connections are told to go.
    return503OnClosing: true,
  });
  const ctx: ApiContext = {
    config: options.config,
    host: options.host,
    spec: openApiSpec(),
    metrics: new ApiMetrics(() => options.host.engine, { processMetrics: options.processMetrics }),
    version: options.version ?? { name: 'tinyllava-serve', version: '0.0.0' },
    startedAt: Math.floor(Date.now() / 1000),
  };
  await app.register(apiPlugin, ctx);
  return app;
}

async function apiPlugin(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  // Only JSON and multipart bodies: anything else is a 415, not a string the schema trips over.
  app.removeContentTypeParser('text/plain');

  app.addHook('onRequest', async (request, reply) => {
    reply.header(REQUEST_ID_HEADER, request.id);
  });
  const auth = bearerAuth(ctx.config.apiKeys);
  if (auth) app.addHook('onRequest', async (request) => auth(request));

  app.setErrorHandler((err, request, reply) => sendError(toApiError(err, ctx.config), request, reply, ctx));
  app.setNotFoundHandler((request, reply) =>
    sendError(new ApiError('route_not_found', `no route ${request.method} ${request.url.split('?')[0]}`), request, reply, ctx),
  );

  for (const routes of [chatCompletionsRoute, modelsRoute, healthRoutes, metricsRoute]) {
    await app.register(async (child) => routes(child, ctx));
  }
}

function sendError(e: ApiError, request: FastifyRequest, reply: FastifyReply, ctx: ApiContext): FastifyReply {
  // 5xx are ours: logged with the cause at error; 4xx are the client's: info, message only.
  if (e.status >= 500 && !e.retry) request.log.error({ err: e.cause ?? e, code: e.code }, e.message);
  else request.log.info({ code: e.code, param: e.param }, e.message);
  // A client that went away is not an error of the server's; the success counter has it as abort.
  if (e.code !== 'cancelled') ctx.metrics.error(e.type, e.code);
  if (e.retry) reply.header('retry-after', String(ctx.config.retryAfterSeconds));
  if (e.status === 401) reply.header('www-authenticate', 'Bearer');
  // The rest of an oversized body is not worth reading: close the connection after answering.
  if (e.status === 413) reply.header('connection', 'close');
  return reply.status(e.status).send(errorBody(e, request.id));
}
