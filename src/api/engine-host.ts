// The server's lifecycle around the engine, which HTTP serves before the model is loaded:
//
//   loading --(engine ready)--> ready --(SIGTERM)--> draining --> (process exits)
//      \--(load fails)--> failed
//
// Between SIGTERM and the drain (the shutdown delay) the host stops advertising: /ready already
// reports `draining`, so that load balancers take the server out of rotation, while generations
// are still handed the engine.
//
// It hands the engine to routes only when ready, and tracks in-flight generations so that a
// drain can wait for them and, past its timeout, cancel them.

import type { Engine } from '../engine/types.js';
import { ApiError } from './errors.js';

export type Phase = 'loading' | 'ready' | 'draining' | 'failed';

export class EngineHost {
  private current: Engine | null = null;
  private state: Phase = 'loading';
  private advertised = true;
  private failure: string | null = null;
  private readonly inFlight = new Set<AbortController>();
  private idleWaiters: (() => void)[] = [];

  /** Starts in `ready` when given an engine that already is (tests). */
  constructor(engine?: Engine, phase: Phase = 'loading') {
    this.current = engine ?? null;
    this.state = phase;
  }

  /** What /ready reports. */
  get phase(): Phase {
    return this.advertised || this.state === 'failed' ? this.state : 'draining';
  }

  get failureMessage(): string | null {
    return this.failure;
  }

  /** The engine once created (its model info is known), ready or not. */
  get engine(): Engine | null {
    return this.current;
  }

  /** Adopts a created engine and waits for it to be ready. Rejects (and turns `failed`) if loading fails. */
  async attach(engine: Engine): Promise<void> {
    this.current = engine;
    try {
      await engine.ready();
    } catch (err) {
      this.fail(err);
      throw err;
    }
    if (this.state === 'loading') this.state = 'ready';
  }

  fail(err: unknown): void {
    this.state = 'failed';
    this.failure = err instanceof Error ? err.message : String(err);
  }

  /** The engine for a new generation, or the 503 that says why there is none. */
  acquire(): Engine {
    if (this.state === 'ready' && this.current) return this.current;
    if (this.state === 'draining') throw new ApiError('shutting_down', 'the server is shutting down; retry on another instance');
    if (this.state === 'failed') throw new ApiError('model_error', `the model failed to load: ${this.failure}`);
    throw new ApiError('model_not_ready', 'the model is still loading; retry shortly');
  }

  /**
   * The engine for work that needs only the model package (tokenize, detokenize), which it has
   * as soon as it exists, before its sessions load.
   */
  inspect(): Engine {
    if (this.state === 'draining') throw new ApiError('shutting_down', 'the server is shutting down; retry on another instance');
    if (this.state === 'failed') throw new ApiError('model_error', `the model failed to load: ${this.failure}`);
    if (!this.current) throw new ApiError('model_not_ready', 'the model is still loading; retry shortly');
    return this.current;
  }

  /** Registers an in-flight generation; call the returned function (idempotent) when it ends. */
  track(controller: AbortController): () => void {
    this.inFlight.add(controller);
    return () => {
      if (this.inFlight.delete(controller) && this.inFlight.size === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    };
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** /ready turns 503 `draining`; generations are still served until startDraining(). */
  stopAdvertising(): void {
    this.advertised = false;
  }

  /** Stops handing out the engine; /ready turns 503. */
  startDraining(): void {
    if (this.state !== 'failed') this.state = 'draining';
  }

  /** Resolves true once nothing is in flight, or false after `timeoutMs`. */
  waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.inFlight.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  /** Cancels every in-flight generation; streams end with an error event carrying `reason`. */
  abortAll(reason: ApiError): void {
    for (const c of this.inFlight) c.abort(reason);
  }
}
