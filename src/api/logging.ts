// The server's logger settings (pino, through fastify). Logs never hold what clients send:
// no request or response headers (Authorization, cookies, API keys), no bodies, prompts or image
// bytes, at any level, whoever logs (our code, fastify, @fastify/multipart, whose trace line
// carries the request headers, or node's HTTP parser errors, which carry the raw bytes):
//
// - requests are logged as method, path (no query string) and remote address only;
// - every log call's arguments pass through `redact` first (hooks.logMethod): values under
//   secret-looking keys are replaced, byte buffers become their length, long strings are cut,
//   bearer tokens and data URLs are masked, and objects are walked to a bounded depth;
// - client-visible error messages keep what they quote of the request out of the log
//   (ApiError.quote).
//
// Output: JSON lines (for collectors), or pino-pretty's readable lines (the default on a TTY).

import type { FastifyRequest, FastifyServerOptions } from 'fastify';
import { stdSerializers, type DestinationStream } from 'pino';
import pinoPretty from 'pino-pretty';

export type LogFormat = 'auto' | 'json' | 'pretty';

/** pino settings for the server's logs; `stream` (tests) replaces stdout. */
export function loggerOptions(level: string, options: { format?: LogFormat; stream?: DestinationStream } = {}): FastifyServerOptions['logger'] {
  const format = options.format === 'auto' || options.format === undefined ? (process.stdout.isTTY ? 'pretty' : 'json') : options.format;
  const stream =
    options.stream ??
    (format === 'pretty'
      ? pinoPretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', sync: true })
      : undefined);
  return {
    level,
    ...(stream ? { stream } : {}),
    serializers: {
      req: (req: FastifyRequest) => ({ method: req.method, url: req.url.split('?')[0], remoteAddress: req.ip }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
      err: (err: Error) => redact(stdSerializers.err(err)) as ReturnType<typeof stdSerializers.err>,
    },
    hooks: {
      logMethod(args, method) {
        method.apply(this, args.map((a) => (a instanceof Error ? a : redact(a))) as Parameters<typeof method>);
      },
    },
  };
}

/** Keys whose values are secrets wherever they appear (compared in lower case, without - and _). */
const SECRET_KEYS = new Set(['authorization', 'proxyauthorization', 'cookie', 'setcookie', 'xapikey', 'apikey', 'apikeys', 'password', 'secret', 'token']);
/** Keys whose values are request content: bodies, prompts, raw bytes. */
const CONTENT_KEYS = new Set(['body', 'payload', 'rawpacket', 'rawbody', 'prompt', 'messages', 'content', 'text', 'data', 'url', 'imageurl']);
/** Left to the serializers above, which know what to keep of a request or a response. */
const SERIALIZED_KEYS = new Set(['req', 'res']);
const MAX_DEPTH = 6;
const MAX_STRING = 300;
const MAX_STACK = 4000;
const MAX_ITEMS = 32;

/** A copy of a log argument that is safe to write (see the file comment). */
export function redact(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value, MAX_STRING);
  if (value === null || typeof value !== 'object') return value;
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return `[${value.byteLength} bytes]`;
  if (depth >= MAX_DEPTH) return '[...]';
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_ITEMS).map((v) => redact(v, depth + 1));
    if (value.length > MAX_ITEMS) items.push(`[${value.length - MAX_ITEMS} more]`);
    return items;
  }
  if (value instanceof Error) return redact(stdSerializers.err(value), depth);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const k = key.toLowerCase().replace(/[-_]/g, '');
    if (depth === 0 && SERIALIZED_KEYS.has(k)) out[key] = v;
    else if (k === 'stack' && typeof v === 'string') out[key] = redactText(v, MAX_STACK);
    else if (SECRET_KEYS.has(k)) out[key] = '[redacted]';
    else if (k === 'headers') out[key] = '[headers]';
    else if (CONTENT_KEYS.has(k) && v !== null && typeof v !== 'number' && typeof v !== 'boolean') out[key] = '[content]';
    else out[key] = redact(v, depth + 1);
  }
  return out;
}

function redactText(text: string, max: number): string {
  let t = text.length > max ? `${text.slice(0, max)}... [${text.length} characters]` : text;
  t = t.replace(/\b(bearer|basic)\s+[^\s"',;]+/gi, '$1 [redacted]');
  t = t.replace(/data:[^,\s"']*,[^\s"']*/gi, 'data:[redacted]');
  return t;
}
