// Structured outputs: a request's OutputConstraint -> a compiled grammar (cached) -> one
// GrammarConstraint per sequence, which masks that sequence's logits at every step.
//
// Timing, per constrained sequence (all heavy work on the libuv thread pool, grammar-native.ts):
//   compile (or cache hit) and the first mask: before the sequence queues, during its prefill
//   step k: sample from the masked row, consume the token (event loop: 10 µs at 32k tokens,
//   0.3 ms at 151k), then mask k+1 starts on the pool while step k+1's decoder call runs in
//   the model worker; the scheduler awaits it (normally long done) before sampling.
//
// JSON schemas compile with llguidance's defaults except whitespace: none between tokens
// (`{"a":1,"b":[2,3]}`), because a small model allowed free whitespace can spend its whole
// max_tokens on newlines. A schema's own top-level "x-guidance" options override that.

import { createHash } from 'node:crypto';
import { EngineError } from './errors.js';
import { loadGrammarTokenizer, type CompiledGrammar, type GrammarMatcher, type GrammarTokenizer } from './grammar-native.js';
import type { LogitsMask } from './sampler.js';
import type { OutputConstraint } from './types.js';

export const DEFAULT_GRAMMAR_CACHE_SIZE = 64;

/** What a model gives the grammar engine. */
export interface GrammarVocabulary {
  tokenizerPath: string;
  /** The decoder's logit rows. */
  logitRows: number;
  stopTokenIds: readonly number[];
}

const JSON_DEFAULTS = { whitespace_flexible: false };

/** The grammar kind and source the addon compiles for a constraint. */
export function grammarSource(c: OutputConstraint): { kind: 'json_schema' | 'regex' | 'lark'; source: string } {
  switch (c.type) {
    case 'json_schema': {
      const schema = c.schema === true ? {} : c.schema;
      if (schema === false) throw invalid(c, 'the schema `false` allows no output at all');
      if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw invalid(c, 'a JSON schema must be an object');
      const own = (schema as Record<string, unknown>)['x-guidance'];
      const options = typeof own === 'object' && own !== null ? { ...JSON_DEFAULTS, ...own } : JSON_DEFAULTS;
      return { kind: 'json_schema', source: JSON.stringify({ ...schema, 'x-guidance': options }) };
    }
    case 'regex':
      return { kind: 'regex', source: c.pattern };
    case 'choice':
      return { kind: 'lark', source: `start: ${c.choices.map(larkLiteral).join(' | ')}\n` };
    case 'grammar':
      return { kind: 'lark', source: c.grammar };
  }
}

/** A Lark string literal: JSON string syntax, DEL escaped too. */
function larkLiteral(s: string): string {
  return JSON.stringify(s).replace(/\x7f/g, '\\u007f');
}

/** Compiles constraints for one model; compiled grammars are cached by source hash, LRU. */
export class Grammars {
  private tokenizer: Promise<GrammarTokenizer> | null = null;
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();

  constructor(
    private readonly vocabulary: GrammarVocabulary,
    private readonly cacheSize = DEFAULT_GRAMMAR_CACHE_SIZE,
  ) {}

  /** Starts building the token trie in the background (it takes ~1 s for a 151k vocabulary). */
  preload(): void {
    this.trie().catch(() => undefined); // reported to the first constrained request
  }

  get cachedGrammars(): number {
    return this.cache.size;
  }

  /** A fresh constraint for one sequence; rejects with a 400-type EngineError naming the field. */
  async constraint(c: OutputConstraint, options: { allowStop: boolean }): Promise<GrammarConstraint> {
    const compiled = await this.compile(c);
    return new GrammarConstraint(compiled.matcher(), c.param, options.allowStop);
  }

  /** The compiled grammar for a constraint, from the cache or compiled off the event loop. */
  async compile(c: OutputConstraint): Promise<CompiledGrammar> {
    const { kind, source } = grammarSource(c);
    const key = createHash('sha256').update(kind).update('\0').update(source).digest('hex');
    let entry = this.cache.get(key);
    if (entry) {
      this.cache.delete(key); // most recently used last
    } else {
      entry = this.trie().then((t) => t.compile(kind, source));
      entry.catch(() => this.cache.get(key) === entry && this.cache.delete(key));
    }
    this.cache.set(key, entry);
    while (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    try {
      return await entry;
    } catch (err) {
      throw err instanceof EngineError ? err : compileError(c, (err as Error).message);
    }
  }

  private trie(): Promise<GrammarTokenizer> {
    this.tokenizer ??= (async () => {
      const v = this.vocabulary;
      try {
        return await loadGrammarTokenizer(v.tokenizerPath, v.logitRows, v.stopTokenIds);
      } catch (err) {
        throw new EngineError('invalid_request', `structured outputs are not available for this model: ${(err as Error).message}`);
      }
    })();
    return this.tokenizer;
  }
}

/**
 * One sequence's grammar state. The scheduler awaits `ready` before the sequence samples; the
 * sampler calls `apply` on the row; the sequence calls `advance` with the chosen token.
 */
export class GrammarConstraint implements LogitsMask {
  private pending: Promise<void> | null = null;
  private failure: Error | null = null;
  private tokens = 0;

  constructor(
    private readonly matcher: GrammarMatcher,
    /** The request field the constraint came from, for errors. */
    readonly param: string,
    /** False with ignore_eos: stop tokens stay masked; the answer ends when the grammar is complete. */
    private readonly allowStop: boolean,
  ) {
    this.computeNext();
  }

  /** Resolves once the mask for the next token is computed (null: it already is). Never rejects. */
  get ready(): Promise<void> | null {
    return this.pending;
  }

  /** The grammar's failure, if computing a mask failed (e.g. a parser limit). */
  get error(): EngineError | null {
    if (!this.failure) return null;
    return new EngineError('invalid_request', `${this.param}: the grammar failed after ${this.tokens} tokens: ${this.failure.message}`, {
      param: this.param,
    });
  }

  apply(logits: Float32Array): void {
    const e = this.error;
    if (e) throw e;
    this.matcher.applyMask(logits, this.allowStop);
  }

  /** Moves past the sampled token; true when the grammar is complete (nothing may follow). */
  advance(token: number): boolean {
    this.tokens++;
    let complete: boolean;
    try {
      complete = this.matcher.consume(token);
    } catch (err) {
      this.failure = err as Error;
      throw this.error;
    }
    if (!complete) this.computeNext();
    return complete;
  }

  // Started from setImmediate, i.e. once the scheduler has sent the next decoder step and waits
  // for it: matchers of one grammar share its lexer behind a lock, so a mask computed while the
  // batch's other rows still consume their tokens (on the event loop) would hold them up.
  private computeNext(): void {
    const p = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.matcher.computeMask())
      .then(
        () => undefined,
        (err: Error) => void (this.failure = err),
      );
    this.pending = p;
    void p.then(() => {
      if (this.pending === p) this.pending = null;
    });
  }
}

function invalid(c: OutputConstraint, message: string): EngineError {
  return new EngineError('invalid_request', `${c.param}: ${message}`, { param: c.param });
}

const UNIMPLEMENTED = /Unimplemented keys: \[([^\]]*)\]/;

/** llguidance's compile errors, made to name the keyword and where it is. */
function compileError(c: OutputConstraint, message: string): EngineError {
  const m = UNIMPLEMENTED.exec(message);
  if (m && c.type === 'json_schema') {
    const keys = [...m[1].matchAll(/"([^"]+)"/g)].map((k) => k[1]);
    const at = keys.length > 0 ? findKeyword(c.schema, keys[0], '') : null;
    const list = keys.map((k) => `"${k}"`).join(', ');
    return invalid(c, `unsupported JSON Schema keyword${keys.length > 1 ? 's' : ''} ${list}${at === null ? '' : ` at ${at || '/'}`}`);
  }
  const short = message.length > 600 ? `${message.slice(0, 600)}...` : message;
  return invalid(c, `cannot compile the ${c.type === 'grammar' ? 'Lark grammar' : c.type.replace('_', ' ')}: ${short}`);
}

// Keywords whose value maps names (not keywords) to subschemas.
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']);

/** The JSON pointer of the first subschema that uses `keyword`, or null. */
function findKeyword(schema: unknown, keyword: string, pointer: string): string | null {
  if (typeof schema !== 'object' || schema === null) return null;
  if (Array.isArray(schema)) {
    for (const [i, s] of schema.entries()) {
      const found = findKeyword(s, keyword, `${pointer}/${i}`);
      if (found !== null) return found;
    }
    return null;
  }
  const obj = schema as Record<string, unknown>;
  if (Object.hasOwn(obj, keyword)) return pointer;
  for (const [k, v] of Object.entries(obj)) {
    const here = `${pointer}/${escapePointer(k)}`;
    if (SCHEMA_MAPS.has(k) && typeof v === 'object' && v !== null) {
      for (const [name, sub] of Object.entries(v)) {
        const found = findKeyword(sub, keyword, `${here}/${escapePointer(name)}`);
        if (found !== null) return found;
      }
    } else if (typeof v === 'object' && v !== null && k !== 'enum' && k !== 'const' && k !== 'examples' && k !== 'default') {
      const found = findKeyword(v, keyword, here);
      if (found !== null) return found;
    }
  }
  return null;
}

function escapePointer(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}
