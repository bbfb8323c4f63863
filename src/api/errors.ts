// The API's one error catalogue: every error a client can see has a code here, with its HTTP
// status and OpenAI error type. Engine errors, fastify's and @fastify/multipart's errors are
// mapped to it in `toApiError`, so that no other module decides a status. The code doubles as
// the label of the errors metric.

import { isEngineError, type EngineError, type EngineErrorCode } from '../engine/errors.js';
import type { components } from './openapi-types.js';

export type ErrorResponse = components['schemas']['ErrorResponse'];
export type ErrorType = ErrorResponse['error']['type'];

interface Entry {
  status: number;
  type: ErrorType;
  /** 429/503: the client may retry after Retry-After seconds. */
  retry?: true;
}

const CATALOGUE = {
  // 400: the request as sent cannot be served
  invalid_json: { status: 400, type: 'invalid_request_error' },
  invalid_request: { status: 400, type: 'invalid_request_error' },
  invalid_http_request: { status: 400, type: 'invalid_request_error' },
  invalid_image_url: { status: 400, type: 'invalid_request_error' },
  image_url_not_allowed: { status: 400, type: 'invalid_request_error' },
  image_fetch_failed: { status: 400, type: 'invalid_request_error' },
  invalid_image: { status: 400, type: 'invalid_request_error' },
  too_many_images: { status: 400, type: 'invalid_request_error' },
  context_length_exceeded: { status: 400, type: 'invalid_request_error' },
  // 401, 404, 405, 408, 413, 415, 431
  invalid_api_key: { status: 401, type: 'authentication_error' },
  model_not_found: { status: 404, type: 'not_found_error' },
  route_not_found: { status: 404, type: 'not_found_error' },
  method_not_allowed: { status: 405, type: 'invalid_request_error' },
  request_timeout: { status: 408, type: 'invalid_request_error' },
  body_too_large: { status: 413, type: 'invalid_request_error' },
  upload_too_large: { status: 413, type: 'invalid_request_error' },
  too_many_uploads: { status: 413, type: 'invalid_request_error' },
  unsupported_media_type: { status: 415, type: 'invalid_request_error' },
  headers_too_large: { status: 431, type: 'invalid_request_error' },
  // 429/503: come back later
  overloaded: { status: 429, type: 'rate_limit_error', retry: true },
  model_not_ready: { status: 503, type: 'server_error', retry: true },
  shutting_down: { status: 503, type: 'server_error', retry: true },
  deadline_exceeded: { status: 503, type: 'server_error', retry: true },
  // the client went away or the server cancelled the work; usually nobody reads this
  cancelled: { status: 503, type: 'server_error', retry: true },
  // 500: our fault; details go to the log, not to the client
  model_error: { status: 500, type: 'server_error' },
  internal_error: { status: 500, type: 'server_error' },
} as const satisfies Record<string, Entry>;

export type ApiErrorCode = keyof typeof CATALOGUE;

export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly code: ApiErrorCode;
  readonly status: number;
  readonly type: ErrorType;
  readonly retry: boolean;
  /** The request field at fault, in the request's own notation: `messages[0].content[1]`. */
  readonly param: string | null;
  /**
   * The end of the client's message that quotes what the client sent (`; got "..."`): it goes
   * to the client only, never to the logs, which must not hold request content.
   */
  readonly quote: string;

  constructor(code: ApiErrorCode, message: string, options: { param?: string | null; cause?: unknown; quote?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const entry: Entry = CATALOGUE[code];
    this.code = code;
    this.status = entry.status;
    this.type = entry.type;
    this.retry = entry.retry === true;
    this.param = options.param ?? null;
    this.quote = options.quote ?? '';
  }
}

const FROM_ENGINE: Record<EngineErrorCode, ApiErrorCode> = {
  invalid_request: 'invalid_request',
  context_length_exceeded: 'context_length_exceeded',
  invalid_image: 'invalid_image',
  too_many_images: 'too_many_images',
  overloaded: 'overloaded',
  cancelled: 'cancelled',
  deadline_exceeded: 'deadline_exceeded',
  not_ready: 'model_not_ready',
  shutting_down: 'shutting_down',
  model_error: 'model_error',
  internal: 'internal_error',
};

/** An engine error as the client sees it; `param` (the image's field, say) replaces the engine's. */
export function fromEngineError(err: EngineError, param: string | null = err.param): ApiError {
  return new ApiError(FROM_ENGINE[err.code], err.message, { param, cause: err });
}

/** Limits quoted in the messages of errors that other libraries raise without them. */
export interface ErrorLimits {
  bodyLimitBytes: number;
  maxUploadBytes: number;
  maxImages: number;
}

/** Any thrown value -> the catalogue entry a client sees. */
export function toApiError(err: unknown, limits: ErrorLimits): ApiError {
  if (err instanceof ApiError) return err;
  if (isEngineError(err)) return fromEngineError(err);
  const code = (err as { code?: unknown } | null)?.code;
  const mb = (n: number): string => `${n} bytes (${(n / 2 ** 20).toFixed(1)} MiB)`;
  switch (code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ApiError('invalid_json', 'the request body is not valid JSON', { cause: err });
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return new ApiError('invalid_json', 'a form field sent as application/json is not valid JSON, or holds a "__proto__" key', { cause: err });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError('invalid_json', 'the request body is empty', { cause: err });
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('body_too_large', `the request body is larger than the limit of ${mb(limits.bodyLimitBytes)}`, { cause: err });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError('unsupported_media_type', 'send the request as application/json or multipart/form-data', { cause: err });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError('invalid_request', 'the body does not match its Content-Length', { cause: err });
    case 'FST_REQ_FILE_TOO_LARGE':
      return new ApiError('upload_too_large', `an uploaded file is larger than the limit of ${mb(limits.maxUploadBytes)}`, { cause: err });
    case 'FST_FILES_LIMIT':
      return new ApiError('too_many_uploads', `at most ${limits.maxImages} files may be uploaded in one request`, { cause: err });
    case 'FST_FIELDS_LIMIT':
    case 'FST_PARTS_LIMIT':
      return new ApiError('body_too_large', 'the form has too many fields', { cause: err });
    case 'FST_PROTO_VIOLATION':
      return new ApiError('invalid_request', 'form field names may not be __proto__ or constructor', { cause: err });
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
    case 'FST_MP_PREMATURE_CLOSE':
      return new ApiError('invalid_request', `malformed multipart/form-data body: ${(err as Error).message}`, { cause: err });
  }
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ApiError('invalid_request', (err as Error).message, { cause: err });
  }
  return new ApiError('internal_error', err instanceof Error ? err.message : String(err), { cause: err });
}

/** The OpenAI envelope. 5xx messages are replaced: the details stay in the log, under the request id. */
export function errorBody(err: ApiError, requestId: string): ErrorResponse {
  const message = err.status >= 500 && !err.retry ? `the server failed to handle the request; request id ${requestId}` : err.message + err.quote;
  return { error: { message, type: err.type, param: err.param, code: err.code } };
}
