// openapi.yaml, compiled once: every schema under components.schemas becomes an ajv validator.
// The server validates requests with it; the tests validate responses with the same validators,
// so that the document, the handlers and the wire cannot drift apart.
//
// The document's `$ref: '#/components/schemas/X'` are rewritten to `X` and every schema is added
// to ajv under its own name, which keeps the document free of ajv-specific ids. A discriminator's
// `mapping` (which the TypeScript generator needs) is dropped for ajv, which refuses it and
// finds the same values in the branches' `const`.

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { parse as parseYaml } from 'yaml';
import { ApiError } from './errors.js';
import type { components } from './openapi-types.js';

export type Schemas = components['schemas'];
export type SchemaName = keyof Schemas;

export const OPENAPI_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '../../../openapi.yaml');

interface OpenApiDocument {
  components: { schemas: Record<string, unknown> };
}

export class OpenApiSpec {
  readonly document: OpenApiDocument;
  private readonly ajv: Ajv2020;
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(path: string = OPENAPI_PATH) {
    this.document = parseYaml(readFileSync(path, 'utf8')) as OpenApiDocument;
    // verbose: errors carry the offending data and schema, for messages that quote them.
    this.ajv = new Ajv2020({ allErrors: false, verbose: true, discriminator: true, strict: true, allowUnionTypes: true });
    for (const [name, schema] of Object.entries(this.document.components.schemas)) {
      this.ajv.addSchema(rewriteRefs(schema) as object, name);
    }
    for (const name of Object.keys(this.document.components.schemas)) this.validator(name);
  }

  /** The raw schema object, e.g. to read a form's field types. */
  schema(name: SchemaName): Record<string, unknown> {
    return this.document.components.schemas[name] as Record<string, unknown>;
  }

  validator(name: string): ValidateFunction {
    let v = this.validators.get(name);
    if (!v) {
      v = this.ajv.getSchema(name);
      if (!v) throw new Error(`openapi.yaml has no schema ${name}`);
      this.validators.set(name, v);
    }
    return v;
  }

  /** The errors of `data` against a schema, or null when it is valid (for tests). */
  errors(name: SchemaName, data: unknown): ErrorObject[] | null {
    const v = this.validator(name);
    return v(data) ? null : [...(v.errors ?? [])];
  }

  /** Checks `data` against a schema and types it, or throws a 400 naming the field at fault. */
  parse<N extends SchemaName>(name: N, data: unknown, paramPrefix = ''): Schemas[N] {
    const v = this.validator(name);
    if (v(data)) return data as Schemas[N];
    const e = describe(v.errors ?? [], (ref) => this.document.components.schemas[ref]);
    const param = joinParam(paramPrefix, e.param);
    throw new ApiError('invalid_request', param ? `${param}: ${e.message}` : e.message, { param: param || null, quote: e.quote });
  }
}

function rewriteRefs(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'mapping' && 'propertyName' in node) continue;
    out[k] = k === '$ref' && typeof v === 'string' ? v.replace(/^#\/components\/schemas\//, '') : rewriteRefs(v);
  }
  return out;
}

/** `/messages/0/content/1` -> `messages[0].content[1]`. */
function toParam(instancePath: string): string {
  return instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, s) => (/^\d+$/.test(s) ? `${acc}[${s}]` : acc ? `${acc}.${s}` : s), '');
}

function joinParam(prefix: string, param: string): string {
  if (!prefix) return param;
  if (!param) return prefix;
  return param.startsWith('[') ? prefix + param : `${prefix}.${param}`;
}

const PREVIEW_CHARS = 40;

/** A short, safe rendering of a wrong value: never a whole base64 image, never a walk down a deep one. */
function preview(value: unknown): string {
  const text = value === undefined ? 'nothing' : jsonPrefix(value, PREVIEW_CHARS + 1);
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS - 3)}...` : text;
}

/**
 * About the first `budget` characters of JSON.stringify(value), computed without stringifying
 * the rest: each level of nesting costs at least one character, so the recursion is never
 * deeper than the budget, however deep the value.
 */
function jsonPrefix(value: unknown, budget: number): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'string') return JSON.stringify(value.length > budget ? value.slice(0, budget) : value);
    return JSON.stringify(value) ?? 'null';
  }
  const array = Array.isArray(value);
  const keys = array ? null : Object.keys(value);
  const length = array ? value.length : keys!.length;
  let out = array ? '[' : '{';
  for (let i = 0; i < length && out.length < budget; i++) {
    if (i > 0) out += ',';
    if (array) out += jsonPrefix(value[i], budget - out.length);
    else {
      out += `${JSON.stringify(keys![i])}:`;
      if (out.length < budget) out += jsonPrefix((value as Record<string, unknown>)[keys![i]], budget - out.length);
    }
  }
  return out.length < budget ? out + (array ? ']' : '}') : out;
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'an integer',
  boolean: 'a boolean',
  array: 'an array',
  object: 'an object',
  null: 'null',
};

function typeList(types: string[]): string {
  const names = [...new Set(types)].map((t) => TYPE_NAMES[t] ?? t);
  return names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}`;
}

interface Described {
  param: string;
  message: string;
  /** `; got <the value>`: for the client only (ApiError.quote). */
  quote: string;
}

/** The one error worth reporting: the deepest, and a mismatch of value rather than of type when one branch matched the type. */
function describe(errors: ErrorObject[], schemaOf: (name: string) => unknown): Described {
  const real = errors.filter((e) => e.keyword !== 'oneOf' && e.keyword !== 'anyOf');
  const pool = real.length > 0 ? real : errors;
  const depth = (e: ErrorObject): number => (e.instancePath.match(/\//g) ?? []).length;
  const deepest = pool.reduce((max, e) => Math.max(max, depth(e)), 0);
  const atDeepest = pool.filter((e) => depth(e) === deepest);
  const nonType = atDeepest.find((e) => e.keyword !== 'type');
  const e = nonType ?? atDeepest[0];
  const param = toParam(e.instancePath);
  const got = `; got ${preview(e.data)}`;
  const p = e.params as Record<string, unknown>;
  const dependent = dependentField(e);
  if (dependent) return dependent;
  switch (e.keyword) {
    case 'type': {
      const types = atDeepest.filter((x) => x.keyword === 'type').flatMap((x) => [(x.params as { type: string | string[] }).type].flat());
      return { param, message: `must be ${typeList(types)}`, quote: got };
    }
    case 'required':
      return { param: joinParam(param, String(p.missingProperty)), message: 'is required', quote: '' };
    case 'additionalProperties':
      return { param: joinParam(param, String(p.additionalProperty)), message: 'is not a known field', quote: '' };
    case 'enum':
      return { param, message: `must be one of ${(p.allowedValues as unknown[]).join(', ')}`, quote: got };
    case 'const':
      return { param, message: `must be ${JSON.stringify(p.allowedValue)}`, quote: got };
    case 'not':
      return { param, message: 'is not allowed here', quote: '' };
    case 'discriminator': {
      const tag = String(p.tag);
      const value = (e.data as Record<string, unknown> | null)?.[tag];
      return { param: joinParam(param, tag), message: `must be one of ${discriminatorValues(e.parentSchema, tag, schemaOf).join(', ')}`, quote: `; got ${preview(value)}` };
    }
    default:
      // ajv's own wording ("must be <= 2", "must NOT have fewer than 1 items") names the limit.
      return { param, message: e.message ?? 'is invalid', quote: got };
  }
}

/**
 * A field that only makes sense with another (`dependentSchemas`: top_logprobs needs logprobs
 * true): reported at the field that was given, e.g. "top_logprobs: needs logprobs: true".
 */
function dependentField(e: ErrorObject): Described | null {
  const m = /\/dependentSchemas\/([^/]+)\/(required|properties\/([^/]+)\/const)$/.exec(e.schemaPath);
  if (!m) return null;
  const field = m[1].replace(/~1/g, '/').replace(/~0/g, '~');
  if (m[2] === 'required') {
    const needed = String((e.params as { missingProperty: string }).missingProperty);
    const value = (e.parentSchema as { properties?: Record<string, { const?: unknown }> } | undefined)?.properties?.[needed]?.const;
    return { param: joinParam(toParam(e.instancePath), field), message: `needs ${needed}${value === undefined ? '' : `: ${JSON.stringify(value)}`}`, quote: '' };
  }
  const objectPath = e.instancePath.slice(0, e.instancePath.lastIndexOf('/'));
  const needed = m[3];
  return {
    param: joinParam(toParam(objectPath), field),
    message: `needs ${needed}: ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`,
    quote: `; got ${needed}: ${preview(e.data)}`,
  };
}

/** The discriminator's possible values, read from the consts of the oneOf branches. */
function discriminatorValues(parentSchema: unknown, tag: string, schemaOf: (name: string) => unknown): string[] {
  const oneOf = (parentSchema as { oneOf?: { $ref?: string }[] } | undefined)?.oneOf ?? [];
  return oneOf
    .map((b) => (b.$ref ? (schemaOf(b.$ref) as { properties?: Record<string, { const?: unknown }> } | undefined)?.properties?.[tag]?.const : null))
    .filter((v): v is string => typeof v === 'string');
}

let shared: OpenApiSpec | null = null;

/** The document at OPENAPI_PATH, loaded and compiled once per process. */
export function openApiSpec(): OpenApiSpec {
  shared ??= new OpenApiSpec();
  return shared;
}
