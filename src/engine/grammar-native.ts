// The one module that loads the grammar addon (native/grammar, llguidance via napi-rs, built by
// `npm ci` into native/build/grammar.node) and states its API in TypeScript. Everything slow
// (the token trie, compiling, each mask) runs on the libuv thread pool and returns a promise;
// `consume` and `applyMask` are the only calls on the event loop, a few microseconds each.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface GrammarTokenizer {
  /** Tokens in the trie: max(tokenizer size, logit rows). */
  readonly vocabSize: number;
  /** kind: json_schema (source: the schema's JSON text), regex (Rust syntax, whole output) or lark. */
  compile(kind: 'json_schema' | 'regex' | 'lark', source: string): Promise<CompiledGrammar>;
  /** The bytes the trie holds for a token; special tokens start with 0xFF. */
  tokenBytes(id: number): Buffer;
}

export interface CompiledGrammar {
  /** A matcher at the grammar's start, for one sequence. */
  matcher(): GrammarMatcher;
}

export interface GrammarMatcher {
  /** Computes the allowed tokens at the current position, off the event loop; resolves with the ms it took there. */
  computeMask(): Promise<number>;
  /** Advances by one allowed token; true when the grammar is complete (only a stop token may follow). */
  consume(token: number): boolean;
  /**
   * Sets every logit the grammar forbids at this position to -Infinity, in place (stop tokens
   * too unless `allowStop`); returns how many tokens stay allowed. Needs a computed mask.
   */
  applyMask(logits: Float32Array, allowStop: boolean): number;
  /** Whether the output so far is complete, i.e. a stop token would be accepted. */
  isAccepting(): boolean;
  readonly stopped: boolean;
}

interface Addon {
  loadTokenizer(tokenizerPath: string, logitRows: number, stopTokens: number[]): Promise<GrammarTokenizer>;
}

export const ADDON_PATH = fileURLToPath(new URL('../../../native/build/grammar.node', import.meta.url));

let addon: Addon | null = null;

/** The addon, or an Error saying why it is not there (the server runs without structured outputs). */
function load(): Addon {
  if (addon) return addon;
  if (!existsSync(ADDON_PATH)) {
    throw new Error(`the grammar addon ${ADDON_PATH} is not built (it needs Rust's cargo: install it, then run npm run build:native)`);
  }
  addon = createRequire(import.meta.url)(ADDON_PATH) as Addon;
  return addon;
}

/**
 * The token trie of one model from its tokenizer.json (read off the event loop, like all of
 * the work here). `logitRows` is the decoder's vocabulary
 * (rows past the tokenizer are never allowed); `stopTokens` end generation and are allowed
 * exactly where the grammar accepts.
 */
export function loadGrammarTokenizer(tokenizerPath: string, logitRows: number, stopTokens: readonly number[]): Promise<GrammarTokenizer> {
  return load().loadTokenizer(tokenizerPath, logitRows, [...stopTokens]);
}
