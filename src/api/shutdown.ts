// Graceful shutdown of the HTTP side, in the order a load balancer can follow:
//  1. stop advertising (SIGTERM): /ready turns 503 `draining` while requests are still served
//     for the shutdown delay, so that health checks (HAProxy's, Kubernetes' endpoints) take the
//     server out of rotation before anything is refused; from here on every response carries
//     `Connection: close`, so that no client or load-balancer pool reuses a connection to it;
//  2. drain: new generations get 503 shutting_down (a load balancer retries them elsewhere),
//     idle keep-alive connections are closed, in-flight requests get up to the drain timeout;
//  3. cancel what still runs (their streams end with a shutting_down error event), then close
//     the listener.
// Closing the engine is the caller's job: it may still be loading.

import type { FastifyInstance } from 'fastify';
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EngineHost } from './engine-host.js';
import { ApiError } from './errors.js';

/** After the drain timeout, how long cancelled requests get to send their last events. */
export const CANCEL_GRACE_MS = 5000;

export interface DrainResult {
  /** Everything in flight finished on its own. */
  drained: boolean;
  /** Requests cancelled at the drain timeout. */
  cancelled: number;
}

export interface ShutdownOptions {
  /** How long /ready says 503 while requests are still served (0: drain at once). */
  shutdownDelayMs: number;
  drainTimeoutMs: number;
  cancelGraceMs?: number;
  /** Called when the delay is over and the drain starts (for the log). */
  onDraining?: () => void;
}

/** The whole sequence: stop advertising, wait the shutdown delay, then drain and close. */
export async function shutDown(app: FastifyInstance, host: EngineHost, options: ShutdownOptions): Promise<DrainResult> {
  stopAdvertising(app, host);
  if (options.shutdownDelayMs > 0) await sleep(options.shutdownDelayMs);
  options.onDraining?.();
  return drainAndClose(app, host, options);
}

/** /ready turns 503 while generations are still served; responses say `Connection: close`. */
export function stopAdvertising(app: FastifyInstance, host: EngineHost): void {
  host.stopAdvertising();
  closeConnectionsAfterResponses(app);
}

export async function drainAndClose(
  app: FastifyInstance,
  host: EngineHost,
  options: { drainTimeoutMs: number; cancelGraceMs?: number },
): Promise<DrainResult> {
  host.startDraining();
  closeConnectionsAfterResponses(app);
  // A connection between requests would carry the next one to a server that refuses it. Ones
  // whose response began before the shutdown kept keep-alive: they are closed as they turn idle.
  app.server.closeIdleConnections();
  const sweep = setInterval(() => app.server.closeIdleConnections(), IDLE_SWEEP_MS);
  let drained: boolean;
  let cancelled = 0;
  try {
    drained = await host.waitIdle(options.drainTimeoutMs);
    if (!drained) {
      cancelled = host.inFlightCount;
      host.abortAll(new ApiError('shutting_down', 'the server is shutting down; retry on another instance'));
      // Cancelled generations end within one engine step; give their last events time to go out.
      await host.waitIdle(options.cancelGraceMs ?? CANCEL_GRACE_MS);
    }
  } finally {
    clearInterval(sweep);
  }
  // Every request has finished by now; idle keep-alive connections (and ones that never sent a
  // request) would otherwise hold close() open until their keep-alive timeout, about a minute.
  const closing = app.close();
  app.server.closeAllConnections();
  await closing;
  return { drained, cancelled };
}

const IDLE_SWEEP_MS = 100;

const closingAfterResponses = new WeakSet<FastifyInstance>();

/** Every response from now on, streamed ones included, says `Connection: close` and ends its connection. */
function closeConnectionsAfterResponses(app: FastifyInstance): void {
  if (closingAfterResponses.has(app)) return;
  closingAfterResponses.add(app);
  // Ahead of fastify's own handler, so that it applies before any header is written.
  app.server.prependListener('request', (_request, response: ServerResponse) => {
    response.shouldKeepAlive = false;
  });
}
