// multipart/form-data chat completions -> the JSON request body plus the uploaded files, so that
// uploads then take the same validation and generation path as JSON requests.
//
// Two forms (documented in openapi.yaml, ChatCompletionSimpleForm and ChatCompletionRequestForm):
//   simple:  prompt=<text> [system=<text>] image=@a.jpg [image=@b.png ...] [max_tokens=64 ...]
//            -> one user message: the images in upload order, then the prompt
//   request: request=<ChatCompletionRequest JSON> photo=@a.jpg ...
//            -> the JSON as is; its image parts say "upload://photo"
//
// Limits are enforced while the body streams in, never after buffering it: a file fails the
// moment it passes MAX_UPLOAD_SIZE, busboy counts files and fields, and the bytes received are
// held to BODY_LIMIT as they arrive (and Content-Length up front).

import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { ApiError, toApiError, type ErrorLimits } from './errors.js';
import { parseJsonText } from './json-body.js';
import type { OpenApiSpec } from './openapi.js';

export interface MultipartBody {
  /** To be validated as a ChatCompletionRequest. */
  body: unknown;
  uploads: Map<string, Uint8Array>;
}

const MAX_FIELDS = 64;

export async function readMultipart(request: FastifyRequest, spec: OpenApiSpec, limits: ErrorLimits): Promise<MultipartBody> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > limits.bodyLimitBytes) throw tooLarge(limits);

  const fields = new Map<string, string[]>();
  const files: { field: string; data: Uint8Array }[] = [];
  // Rejects as soon as more than BODY_LIMIT bytes arrived, whatever part they belong to; every
  // wait below races it, so that a body that never ends cannot hold the request.
  let received = 0;
  let overLimit!: (err: ApiError) => void;
  const tooMuch = new Promise<never>((_, reject) => (overLimit = reject));
  tooMuch.catch(() => undefined);
  const count = (chunk: Buffer): void => {
    received += chunk.length;
    if (received > limits.bodyLimitBytes) overLimit(tooLarge(limits));
  };
  // A wait abandoned after an error may still reject later: that must not be an unhandled rejection.
  const orTooMuch = <T>(p: Promise<T>): Promise<T> => {
    p.catch(() => undefined);
    return Promise.race([p, tooMuch]);
  };
  try {
    const parts = request.parts({
      limits: {
        fileSize: limits.maxUploadBytes,
        files: limits.maxImages,
        fields: MAX_FIELDS,
        fieldSize: limits.bodyLimitBytes,
        parts: MAX_FIELDS + limits.maxImages,
      },
    });
    // parts() has piped the body into busboy; this listener only counts what arrives.
    request.raw.on('data', count);
    for (;;) {
      const next = await orTooMuch(parts.next());
      if (next.done) break;
      const part = next.value;
      if (part.type === 'file') {
        const data = await orTooMuch(readFile(part.file, limits));
        if (part.fieldname === 'request') addField(fields, 'request', data.toString('utf8'));
        else files.push({ field: part.fieldname, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
      } else {
        if (part.valueTruncated) throw tooLarge(limits);
        const value = typeof part.value === 'string' ? part.value : JSON.stringify(part.value);
        addField(fields, part.fieldname, value);
      }
    }
  } catch (err) {
    // busboy's own parse errors carry no code; they are the client's malformed body.
    const e = toApiError(err, limits);
    if (e.code === 'internal_error') throw new ApiError('invalid_request', `malformed multipart/form-data body: ${e.message}`, { cause: err });
    throw e;
  } finally {
    request.raw.off('data', count);
  }
  return fields.has('request') ? requestForm(fields, files) : simpleForm(fields, files, spec);
}

/** A file part's bytes; fails the moment it passes MAX_UPLOAD_SIZE, not when the part ends. */
function readFile(file: Readable & { truncated?: boolean }, limits: ErrorLimits): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    // busboy may have hit the limit (and emitted 'limit') before this function ran: check the flag too.
    const check = (): boolean => {
      if (!file.truncated) return false;
      reject(new ApiError('upload_too_large', `an uploaded file is larger than the limit of ${limits.maxUploadBytes} bytes`));
      return true;
    };
    file.on('data', (c: Buffer) => check() || chunks.push(c));
    file.once('limit', check);
    file.once('error', reject);
    file.once('end', () => check() || resolve(Buffer.concat(chunks)));
  });
}

function tooLarge(limits: ErrorLimits): ApiError {
  return new ApiError('body_too_large', `the request body is larger than the limit of ${limits.bodyLimitBytes} bytes`);
}

function addField(fields: Map<string, string[]>, name: string, value: string): void {
  const list = fields.get(name) ?? [];
  list.push(value);
  fields.set(name, list);
}

function requestForm(fields: Map<string, string[]>, files: { field: string; data: Uint8Array }[]): MultipartBody {
  const extra = [...fields.keys()].find((k) => k !== 'request');
  if (extra !== undefined) {
    throw new ApiError('invalid_request', `with a "request" field, put every parameter inside it; got the field ${JSON.stringify(extra)} too`, {
      param: extra,
    });
  }
  const [text, second] = fields.get('request')!;
  if (second !== undefined) throw new ApiError('invalid_request', 'the field "request" is given more than once', { param: 'request' });
  const body = parseJsonText(text, 'the field "request"', 'request');
  const uploads = new Map<string, Uint8Array>();
  for (const f of files) {
    if (uploads.has(f.field)) {
      throw new ApiError('invalid_request', `two files are named ${JSON.stringify(f.field)}; give each upload its own field name`, {
        param: f.field,
      });
    }
    uploads.set(f.field, f.data);
  }
  return { body, uploads };
}

function simpleForm(fields: Map<string, string[]>, files: { field: string; data: Uint8Array }[], spec: OpenApiSpec): MultipartBody {
  const stray = files.find((f) => f.field !== 'image');
  if (stray) {
    throw new ApiError('invalid_request', `unexpected file field ${JSON.stringify(stray.field)}; name image files "image"`, {
      param: stray.field,
    });
  }
  // Text fields take their JSON types from the form's schema, then the schema checks them.
  const properties = (spec.schema('ChatCompletionSimpleForm').properties ?? {}) as Record<string, { type?: string; contentMediaType?: string }>;
  const form: Record<string, unknown> = {};
  for (const [name, values] of fields) {
    const type = properties[name]?.type;
    if (type === 'array') form[name] = values;
    else if (values.length > 1) throw new ApiError('invalid_request', `the field ${JSON.stringify(name)} is given more than once`, { param: name });
    else form[name] = coerce(values[0], type);
  }
  if (form.prompt === undefined) throw new ApiError('invalid_request', 'prompt: is required (or send a "request" field)', { param: 'prompt' });
  const f = spec.parse('ChatCompletionSimpleForm', form);

  const uploads = new Map(files.map((file, i) => [`image[${i}]`, file.data] as const));
  const { prompt, system, include_usage, image: _files, ...scalars } = f;
  const body: Record<string, unknown> = {
    ...scalars,
    messages: [
      ...(system === undefined ? [] : [{ role: 'system', content: system }]),
      {
        role: 'user',
        content: [
          ...[...uploads.keys()].map((key) => ({ type: 'image_url', image_url: { url: `upload://${key}` } })),
          { type: 'text', text: prompt },
        ],
      },
    ],
  };
  if (include_usage !== undefined) body.stream_options = { include_usage };
  // JSON text fields (response_format, guided_json) become the values the JSON request would
  // carry; the request's schema checks them next.
  for (const [name, p] of Object.entries(properties)) {
    if (p.contentMediaType !== 'application/json' || typeof body[name] !== 'string') continue;
    try {
      body[name] = JSON.parse(body[name] as string);
    } catch (err) {
      throw new ApiError('invalid_json', `the field ${JSON.stringify(name)} is not valid JSON: ${(err as Error).message}`, { param: name });
    }
  }
  return { body, uploads };
}

/** Form text -> the schema's type when it reads as one; otherwise left as text for the schema to refuse. */
function coerce(value: string, type: string | undefined): unknown {
  if ((type === 'integer' || type === 'number') && /^\s*-?\d+(\.\d+)?([eE][+-]?\d+)?\s*$/.test(value)) return Number(value);
  if (type === 'boolean' && (value === 'true' || value === 'false')) return value === 'true';
  return value;
}
