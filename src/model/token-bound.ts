// A cheap lower bound on how many tokens a text becomes, so that a text that cannot fit the
// context is refused in one pass over its length instead of being tokenized whole (a 30 MB
// prompt took 35 s of CPU and 3.6 GB to learn that it does not fit 2048 tokens).
//
//   tokens(text) >= ceil(text.length / unitsPerToken)     (text.length in UTF-16 units)
//
// unitsPerToken bounds how many UTF-16 units of the input one token can stand for:
// - a token stands for the text it decodes to, at most its byte length in UTF-8 (the token
//   byte table), which is never fewer than its UTF-16 units; an unknown character without
//   byte fallback is one <unk> of at most 2 units;
// - the normalizer may shorten the input before the model sees it: NFC/NFKC compose at most 4
//   units into 1 (U+1F8F is 4 code points decomposed), Replace shortens by pattern/content.
// Anything that can swallow an unbounded run of input into one token (a normalizer or
// pre-tokenizer that removes text, added tokens that strip whitespace around them, fused
// <unk>s without byte fallback, a model other than BPE) makes the bound Infinity: no early
// refusal, only the exact count after tokenizing.

import type { TokenByteTable } from './token-bytes.js';

interface Json {
  type?: string;
  [key: string]: unknown;
}

export interface TokenizerDocument {
  model: Json;
  normalizer?: Json | null;
  pre_tokenizer?: Json | null;
  added_tokens?: { lstrip?: boolean; rstrip?: boolean }[];
}

/** The most UTF-16 units of input one token can stand for (Infinity: no bound known). */
export function unitsPerTokenBound(doc: TokenizerDocument, table: Pick<TokenByteTable, 'bytes'>): number {
  const model = doc.model;
  if (model.type !== 'BPE') return Infinity;
  if (model.unk_token != null && model.fuse_unk === true && model.byte_fallback !== true) return Infinity;
  if ((doc.added_tokens ?? []).some((t) => t.lstrip === true || t.rstrip === true)) return Infinity;
  if (!preTokenizerKeepsText(doc.pre_tokenizer ?? null)) return Infinity;
  const shrink = normalizerShrink(doc.normalizer ?? null);
  let longest = 2;
  for (const bytes of table.bytes) if (bytes && bytes.length > longest) longest = bytes.length;
  return longest * shrink;
}

/** How many times shorter the normalizer can make a text (1: never shorter). */
function normalizerShrink(n: Json | null): number {
  if (n === null) return 1;
  switch (n.type) {
    case 'Sequence':
      return ((n.normalizers as Json[] | undefined) ?? []).reduce((f, inner) => f * normalizerShrink(inner), 1);
    case 'NFC':
    case 'NFKC':
      return 4;
    case 'NFD':
    case 'NFKD':
    case 'Prepend':
    case 'Lowercase':
      return 1;
    case 'Replace': {
      const from = (n.pattern as { String?: string } | undefined)?.String;
      const to = typeof n.content === 'string' ? n.content : '';
      if (from === undefined || to.length === 0) return Infinity;
      return Math.max(1, from.length / to.length);
    }
    default:
      return Infinity;
  }
}

/** True when the pre-tokenizer only splits (or maps one to one), never drops text. */
function preTokenizerKeepsText(p: Json | null): boolean {
  if (p === null) return true;
  switch (p.type) {
    case 'Sequence':
      return ((p.pretokenizers as Json[] | undefined) ?? []).every(preTokenizerKeepsText);
    case 'ByteLevel':
    case 'Metaspace':
    case 'Digits':
    case 'Punctuation':
    case 'UnicodeScripts':
      return true;
    case 'Split':
      return p.behavior !== 'Removed';
    default:
      return false;
  }
}

/** The fewest tokens a text of `length` UTF-16 units can become under the bound (0 without one). */
export function minTokens(length: number, unitsPerToken: number): number {
  return Number.isFinite(unitsPerToken) ? Math.ceil(length / unitsPerToken) : 0;
}
