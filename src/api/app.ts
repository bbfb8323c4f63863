// The HTTP app: a fastify instance with our plugin (request ids, CORS, API keys, the JSON body
// parser, the error envelope, the routes), built from the configuration and an engine host,
// never listening: src/cli/serve.ts listens, tests use inject() or listen on port 0.

import type { ServerOptions } from 'node:http';
import cors from '@fastify/cors';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { AllowedMethods } from './allowed-methods.js';
import { bearerAuth } from './auth.js';
import { clientErrorHandler, closedByServer } from './client-errors.js';
import type { ApiConfig, ApiContext, ServerVersion } from './context.js';
import type { EngineHost } from './engine-host.js';
import { ApiError, errorBody, toApiError } from './errors.js';
import { parseJsonText } from './json-body.js';
import { ApiMetrics } from './metrics.js';
import { openApiSpec } from './openapi.js';
import { RemoteImages, type Resolver } from './remote-image.js';
import { REQUEST_ID_HEADER, requestId } from './request-id.js';
import { chatCompletionsRoute } from './routes/chat-completions.js';
import { chatPagePaths, chatPageRoute } from './routes/chat-page.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoute } from './routes/metrics.js';
import { modelsRoute } from './routes/models.js';
import { tokenizeRoutes } from './routes/tokenize.js';

export interface AppOptions {
  config: ApiConfig;
  host: EngineHost;
  version?: ServerVersion;
  /** fastify's logger option; false (the default) for none. */
  logger?: FastifyServerOptions['logger'];
  /** Node process metrics (CPU, memory, event loop) on /metrics; default true. */
  processMetrics?: boolean;
  /** Host names -> addresses for remote images (tests); the system resolver by default. */
  resolve?: Resolver;
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const c = options.config;
  let metrics: ApiMetrics | null = null;
  let log: FastifyBaseLogger | null = null;
  const app: FastifyInstance = Fastify({
    logger: options.logger ?? false,
    bodyLimit: c.bodyLimitBytes,
    genReqId: requestId,
    requestIdHeader: false,
    // While closing, new requests get 503 and keep-alive connections are told to go.
    return503OnClosing: true,
    // Slow or silent clients must not hold connections: node checks these every
    // connectionsCheckingInterval (30 s by default, too coarse for a 10 s limit).
    http: { headersTimeout: c.headersTimeoutSeconds * 1000, connectionsCheckingInterval: checkingInterval(c) } as ServerOptions,
    requestTimeout: c.bodyTimeoutSeconds * 1000,
    keepAliveTimeout: c.keepAliveTimeoutSeconds * 1000,
    clientErrorHandler: clientErrorHandler(
      () => metrics,
      () => log,
    ),
  });
  log = app.log;
  const spec = openApiSpec();
  metrics = new ApiMetrics(() => options.host.engine, { processMetrics: options.processMetrics });
  const m = metrics;
  const ctx: ApiContext = {
    config: c,
    host: options.host,
    spec,
    metrics: m,
    remoteImages: new RemoteImages({
      allowAny: c.allowRemoteImages,
      allowedHosts: c.allowedImageDomains,
      maxBytes: c.maxUploadBytes,
      timeoutMs: c.imageFetchTimeoutSeconds * 1000,
      resolve: options.resolve,
      onFetched: (result, seconds) => m.imageFetched(result, seconds),
    }),
    allowedMethods: new AllowedMethods({
      ...(spec.document as unknown as { paths: Record<string, Record<string, unknown>> }).paths,
      // The chat page is no part of the contract, but POST / is still a 405 where GET / is served.
      ...Object.fromEntries((c.ui ? chatPagePaths() : []).map((path) => [path, { get: {} }])),
    }),
    version: options.version ?? { name: 'tinyllava-serve', version: '0.0.0' },
    startedAt: Math.floor(Date.now() / 1000),
  };
  await app.register(apiPlugin, ctx);
  return app;
}

/** Often enough that a timeout of T fires within about T * 1.25, at most every second. */
function checkingInterval(c: ApiConfig): number {
  const limits = [c.headersTimeoutSeconds, c.bodyTimeoutSeconds].filter((s) => s > 0).map((s) => s * 1000);
  return Math.max(50, Math.min(1000, ...limits.map((ms) => ms / 4)));
}

async function apiPlugin(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  // Only JSON and multipart bodies: anything else is a 415, not a string the schema trips over.
  app.removeContentTypeParser(['text/plain', 'application/json']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, parseJsonText(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    // A client gone before its response was complete: an upload cut short, a stream closed early.
    reply.raw.once('close', () => {
      if (!reply.raw.writableEnded && !closedByServer.has(request.raw.socket)) ctx.metrics.cancelled();
    });
  });
  // Browsers ask (preflight) before they send; the answer must come before any API key check.
  if (ctx.config.allowedOrigins.length > 0) {
    await app.register(cors, {
      origin: ctx.config.allowedOrigins.includes('*') ? '*' : ctx.config.allowedOrigins,
      methods: ['GET', 'HEAD', 'POST'],
      exposedHeaders: [REQUEST_ID_HEADER, 'retry-after'],
      maxAge: 600,
      strictPreflight: false,
    });
  }
  const auth = bearerAuth(ctx.config.apiKeys);
  if (auth) app.addHook('onRequest', async (request) => auth(request));

  // A request no route takes can still fail before the not-found handler (QUERY without a
  // Content-Type, say): it gets the same 404 or 405.
  app.setErrorHandler((err, request, reply) =>
    request.is404 ? notFound(request, reply, ctx) : sendError(toApiError(err, ctx.config), request, reply, ctx),
  );
  app.setNotFoundHandler((request, reply) => notFound(request, reply, ctx));

  for (const routes of [chatCompletionsRoute, modelsRoute, tokenizeRoutes, healthRoutes, metricsRoute]) {
    await app.register(async (child) => routes(child, ctx));
  }
  if (ctx.config.ui) await app.register(chatPageRoute);
}

/** 405 with Allow for a documented path asked with another method, else 404. */
function notFound(request: FastifyRequest, reply: FastifyReply, ctx: ApiContext): FastifyReply {
  const path = request.url.split('?')[0];
  const allowed = ctx.allowedMethods.of(path);
  if (allowed === null) return sendError(new ApiError('route_not_found', `no route ${request.method} ${path}`), request, reply, ctx);
  reply.header('allow', allowed.join(', '));
  return sendError(new ApiError('method_not_allowed', `${path} takes ${allowed.join(', ')}, not ${request.method}`), request, reply, ctx);
}

/** The request's client is gone: whatever failed, nobody is left to tell. */
function clientGone(request: FastifyRequest): boolean {
  return (request.raw.destroyed && !request.raw.complete) || request.raw.socket?.destroyed === true;
}

function sendError(err: ApiError, request: FastifyRequest, reply: FastifyReply, ctx: ApiContext): FastifyReply {
  // An upload cut short fails in the body parser; that is a cancellation, not the client's mistake.
  const e = err.code !== 'cancelled' && err.status < 500 && clientGone(request) ? new ApiError('cancelled', 'the client disconnected', { cause: err }) : err;
  // 5xx are ours: logged with the cause at error; 4xx are the client's: info, message only
  // (what the message quotes of the request stays out of the log).
  if (e.status >= 500 && !e.retry) request.log.error({ err: e.cause ?? e, code: e.code }, e.message);
  else request.log.info({ code: e.code, param: e.param }, e.message);
  // A client that went away is not an error of the server's; the cancellation counter has it.
  if (e.code !== 'cancelled') ctx.metrics.error(e.type, e.code);
  if (e.retry) reply.header('retry-after', String(ctx.config.retryAfterSeconds));
  if (e.status === 401) reply.header('www-authenticate', 'Bearer');
  // The rest of an oversized body is not worth reading: close the connection after answering.
  if (e.status === 413) reply.header('connection', 'close');
  return reply.status(e.status).type('application/json; charset=utf-8').send(errorBody(e, request.id));
}
