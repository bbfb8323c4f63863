// Typed engine errors. The api layer maps `code` to an HTTP status and the OpenAI error envelope
// in one place; the engine never speaks HTTP. `param` names the request field at fault, when
// there is one, so that validation messages can point at it.

export type EngineErrorCode =
  | 'invalid_request' // a request the engine cannot serve as given (400)
  | 'context_length_exceeded' // prompt (+ max_tokens) over the model's context (400)
  | 'invalid_image' // image bytes that do not decode (400)
  | 'too_many_images' // more images than the engine accepts in one request (400)
  | 'overloaded' // queue full or KV cache exhausted: retry later (429/503)
  | 'cancelled' // the caller aborted (no response is expected)
  | 'deadline_exceeded' // the request's deadline passed before it could start (408/504)
  | 'not_ready' // the model is still loading (503)
  | 'shutting_down' // close() was called (503)
  | 'model_error' // the model package or a session failed (500)
  | 'internal'; // a bug (500)

export class EngineError extends Error {
  readonly code: EngineErrorCode;
  readonly param: string | null;
  /** The request's image at fault, by its index in prompt order (the api layer knows its field). */
  readonly image: number | null;

  constructor(code: EngineErrorCode, message: string, options?: { param?: string; cause?: unknown; image?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EngineError';
    this.code = code;
    this.param = options?.param ?? null;
    this.image = options?.image ?? null;
  }
}

export function isEngineError(err: unknown): err is EngineError {
  return err instanceof EngineError;
}

/** Wraps anything thrown below the engine so that callers only ever see EngineError. */
export function toEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new EngineError('internal', message, { cause: err });
}
