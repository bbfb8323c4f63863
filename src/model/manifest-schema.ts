// Validates a parsed manifest.json against manifest.schema.json (the one schema the Python
// exporter uses too) and turns ajv's errors into sentences that name the field, the rule and
// the value: `text.num_layers must be an integer, got "x"`.

import type { ErrorObject, ValidateFunction } from 'ajv';
import Ajv2020Module from 'ajv/dist/2020.js';
import schema from './manifest.schema.json' with { type: 'json' };
import type { Manifest } from './manifest-types.js';

// The schema is JSON Schema 2020-12 (what the exporter's jsonschema validator uses too). ajv is
// CommonJS: under NodeNext its class is the module's `default` property.
const Ajv2020 = Ajv2020Module.default;

let validator: ValidateFunction<Manifest> | undefined;

function compiled(): ValidateFunction<Manifest> {
  // verbose: errors carry the offending value and the failing sub-schema (for its description).
  validator ??= new Ajv2020({ allErrors: true, verbose: true, allowUnionTypes: true }).compile<Manifest>(schema);
  return validator;
}

/** The schema's problems with `value`, one sentence each; empty when it is a valid manifest. */
export function schemaProblems(value: unknown): string[] {
  const validate = compiled();
  if (validate(value)) return [];
  return (validate.errors ?? [])
    .filter((e) => e.keyword !== 'if') // "must match then schema": the inner error says why
    .map(describe);
}

function describe(e: ErrorObject): string {
  // A sub-schema's description says why a rule applies (see the if/then rules in the schema).
  const description = (e.parentSchema as { description?: string } | undefined)?.description;
  if (e.keyword === 'pattern' && description) {
    return `${fieldPath(e.instancePath)} ${description}, got ${show(e.data)}`;
  }
  const sentence = ruleSentence(e);
  return description && e.keyword !== 'required' ? `${sentence} (${description})` : sentence;
}

function ruleSentence(e: ErrorObject): string {
  const at = fieldPath(e.instancePath);
  const got = `got ${show(e.data)}`;
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return `${join(at, String(params.missingProperty))} is missing`;
    case 'additionalProperties':
      return `${join(at, String(params.additionalProperty))} is not a field of this format`;
    case 'type':
      return `${at} must be ${typeWords(String(params.type))}, ${got}`;
    case 'enum':
      return `${at} must be one of ${(params.allowedValues as unknown[]).map(show).join(', ')}, ${got}`;
    case 'const':
      return `${at} must be ${show(params.allowedValue)}, ${got}`;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return `${at} must be ${String(params.comparison)} ${String(params.limit)}, ${got}`;
    case 'minItems':
    case 'maxItems': {
      const limit = Number(params.limit);
      const bound = e.keyword === 'minItems' ? 'at least' : 'at most';
      return `${at} must have ${bound} ${limit} item${limit === 1 ? '' : 's'}, ${got}`;
    }
    case 'minLength':
      return `${at} must not be empty`;
    case 'pattern':
      return `${at} must match ${String(params.pattern)}, ${got}`;
    default:
      return `${at} ${e.message ?? 'is invalid'}, ${got}`;
  }
}

/** "/text/eos_token_ids/0" -> "text.eos_token_ids[0]"; the document itself is "(root)". */
function fieldPath(pointer: string): string {
  if (pointer === '') return '(root)';
  return pointer
    .slice(1)
    .split('/')
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path ? `${path}.${part}` : part), '');
}

function join(parent: string, child: string): string {
  return parent === '(root)' ? child : `${parent}.${child}`;
}

function typeWords(types: string): string {
  const words: Record<string, string> = {
    integer: 'an integer',
    number: 'a number',
    string: 'a string',
    boolean: 'a boolean',
    object: 'an object',
    array: 'an array',
    null: 'null',
  };
  return types
    .split(',')
    .map((t) => words[t] ?? t)
    .join(' or ');
}

function show(value: unknown): string {
  const text = value === undefined ? 'nothing' : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
