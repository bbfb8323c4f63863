// Graceful shutdown of the HTTP side: stop handing out the engine (/ready turns 503, new
// generations get 503 shutting_down), let in-flight requests finish for up to the drain
// timeout, cancel the rest (their streams end with a shutting_down error event), then close
// the listener. Closing the engine is the caller's job: it may still be loading.

import type { FastifyInstance } from 'fastify';
import type { EngineHost } from './engine-host.js';
import { ApiError } from './errors.js';

export interface DrainResult {
  /** Everything in flight finished on its own. */
  drained: boolean;
  /** Requests cancelled at the drain timeout. */
  cancelled: number;
}

export async function drainAndClose(
  app: FastifyInstance,
  host: EngineHost,
  options: { drainTimeoutMs: number; cancelGraceMs?: number },
): Promise<DrainResult> {
  host.startDraining();
  const drained = await host.waitIdle(options.drainTimeoutMs);
  let cancelled = 0;
  if (!drained) {
    cancelled = host.inFlightCount;
    host.abortAll(new ApiError('shutting_down', 'the server is shutting down; retry on another instance'));
    // Cancelled generations end within one engine step; give their last events time to go out.
    await host.waitIdle(options.cancelGraceMs ?? 5000);
  }
  // Every request has finished by now; idle keep-alive connections (and ones that never sent a
  // request) would otherwise hold close() open until their keep-alive timeout, about a minute.
  const closing = app.close();
  app.server.closeAllConnections();
  await closing;
  return { drained, cancelled };
}
