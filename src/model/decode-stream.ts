// Incremental detokenisation: feed generated token ids one at a time, get back only text that
// is final. Concatenating every push() and the final flush() gives exactly the reference
// tokenizer's decode of the whole sequence (manifest `tokenizer`, docs/model-package.md):
//
// - Byte-level tokenizers: a token may end inside a UTF-8 character; bytes are held until the
//   character completes. Invalid sequences become U+FFFD per maximal subpart (Python's
//   errors="replace", Rust's from_utf8_lossy and TextDecoder agree).
// - Byte-fallback ("<0xHH>") runs are held until a text token (or the end) closes them, because
//   a run decodes as a whole: HF's ByteFallback gives its UTF-8 text if the whole run is valid,
//   otherwise one U+FFFD per byte; SentencePiece (slow tokenizers) decodes it character by
//   character, each invalid byte one U+FFFD ("<0x45><0x95>" -> "E\uFFFD").
// - Slow tokenizers split the text at non-special added tokens into runs decoded separately,
//   and join runs and added tokens with a separator (a space for most: phi-2's whitespace tokens
//   gain spaces around them). An empty run adds no separator.
// - Leading space: tokenizer.json's Strip/Metaspace decoder removes it from the start of the
//   text; a slow SentencePiece tokenizer removes one from the first piece of every run.

import type { TokenByteTable } from './token-bytes.js';

export interface DecodeStreamOptions {
  /** Drop tokens the tokenizer marks special, like decode(ids, skip_special_tokens=True). */
  skipSpecialTokens?: boolean;
  /** How invalid byte-fallback runs decode (default hf). */
  byteFallback?: 'hf' | 'sentencepiece';
  /** Leading space handling (default: tokenizer.json's decoder, at the text start). */
  runLeadingSpace?: RunLeadingSpace;
  /** Non-special added tokens that split the text into separately decoded runs (slow tokenizers). */
  addedTokenIds?: readonly number[];
  addedTokenSeparator?: string;
  /** Added tokens' "▁" decode as spaces (GemmaTokenizer). */
  addedTokenMetaspace?: boolean;
}

const REPLACEMENT = '\uFFFD';
const SPIECE = '\u2581';

/**
 * - tokenizer_json: tokenizer.json's Strip/Metaspace decoder, at the start of the text.
 * - strip: a slow Llama tokenizer's convert_tokens_to_string: the first piece of each run loses
 *   its leading "▁"; what is left decodes as a piece when it is one, else verbatim ("▁▁▁"
 *   stays "▁▁▁": SentencePiece returns an unknown piece as it is).
 * - strip_sentencepiece: the same, then SentencePiece's dummy prefix: the first piece with
 *   visible text loses a leading space that came from "▁" (not one from a byte piece).
 * - keep: nothing is removed.
 */
export type RunLeadingSpace = 'tokenizer_json' | 'strip' | 'strip_sentencepiece' | 'keep';

export class DecodeStream {
  // ignoreBOM: keep a U+FEFF in the text (by default TextDecoder swallows a leading one).
  private utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private readonly strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  private readonly skipSpecial: boolean;
  private readonly byteFallback: 'hf' | 'sentencepiece';
  private readonly leading: RunLeadingSpace;
  private readonly breaks: ReadonlySet<number>;
  private readonly separator: string;
  private readonly metaspace: boolean;
  /** Pending byte-fallback run. */
  private run: number[] = [];
  /** tokenizer_json: leading strip characters still to remove from the very start of the text. */
  private toStrip: number;
  private started = false;
  /** The next token is the first of a run (slow runs). */
  private runStart = true;
  /** A sub-text has been emitted (runs and added tokens joined with the separator). */
  private anySubText = false;
  /** The current run has emitted text. */
  private runHasText = false;
  /** strip_sentencepiece: the run's dummy-prefix space may still be removed. */
  private dummyPending = false;

  constructor(
    private readonly table: TokenByteTable,
    options: DecodeStreamOptions = {},
  ) {
    this.skipSpecial = options.skipSpecialTokens ?? false;
    this.byteFallback = options.byteFallback ?? 'hf';
    this.leading = options.runLeadingSpace ?? 'tokenizer_json';
    this.breaks = new Set(options.addedTokenIds ?? []);
    this.separator = options.addedTokenSeparator ?? '';
    this.metaspace = options.addedTokenMetaspace ?? false;
    this.toStrip = this.leading === 'tokenizer_json' ? table.stripLeading : 0;
  }

  /**
   * The text that `id` makes final: '' while a character or byte run is still open, for a
   * skipped special token, and for an id the tokenizer does not know (logit rows past its
   * vocabulary), which decode() skips too.
   */
  push(id: number): string {
    if (this.skipSpecial && this.table.specialIds.has(id)) return '';
    const bytes = this.table.bytes[id];
    if (bytes === undefined) return '';
    if (this.breaks.has(id)) return this.addedToken(id);
    const first = this.runStart;
    this.runStart = false;
    if (this.table.byteTokens) {
      if (this.table.byteTokens[id]) {
        this.run.push(bytes[0]);
        this.dummyPending = false; // a byte's space is never the dummy prefix
        return '';
      }
      // Text tokens of these tokenizers are whole strings: no partial characters.
      const text = first && (this.leading === 'strip' || this.leading === 'strip_sentencepiece')
        ? this.firstPieceText(id)
        : this.pieceText(bytes);
      return this.emit(this.closeRun() + text);
    }
    return this.emit(this.utf8.decode(bytes, { stream: true }));
  }

  /** Whatever is left: an open byte run, or an incomplete character (U+FFFD). */
  flush(): string {
    return this.emit(this.closeRun() + this.utf8.decode());
  }

  /** A run's first piece with its "▁" removed (RunLeadingSpace strip / strip_sentencepiece). */
  private firstPieceText(id: number): string {
    this.dummyPending = this.leading === 'strip_sentencepiece';
    const piece = this.table.pieces?.[id] ?? '';
    if (!piece.startsWith(SPIECE)) return this.pieceText(this.table.bytes[id]);
    const rest = piece.slice(SPIECE.length);
    if (rest === '') return '';
    const restId = this.table.pieceIds?.get(rest);
    if (restId === undefined) {
      this.dummyPending = false;
      return rest; // SentencePiece gives an unknown piece back verbatim
    }
    return this.pieceText(this.table.bytes[restId]);
  }

  private pieceText(bytes: Uint8Array): string {
    let text = this.utf8.decode(bytes);
    if (this.dummyPending && text !== '') {
      this.dummyPending = false;
      if (text.startsWith(' ')) text = text.slice(1);
    }
    return text;
  }

  /** Ends the current run and emits an added token as its own sub-text. */
  private addedToken(id: number): string {
    const rest = this.emit(this.closeRun() + this.utf8.decode());
    this.utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
    let content = this.table.contents.get(id) ?? '';
    if (this.metaspace) content = content.split('\u2581').join(' ');
    const out = rest + (this.anySubText ? this.separator : '') + content;
    this.anySubText = true;
    this.started = true;
    this.runStart = true;
    this.runHasText = false;
    this.dummyPending = false;
    return out;
  }

  private closeRun(): string {
    if (this.run.length === 0) return '';
    const run = Uint8Array.from(this.run);
    this.run = [];
    if (this.byteFallback === 'sentencepiece') return decodeUtf8PerByte(run);
    try {
      return this.strictUtf8.decode(run);
    } catch {
      return REPLACEMENT.repeat(run.length);
    }
  }

  /** Text of the current run: the separator goes before a run's first text. */
  private emit(text: string): string {
    text = this.strip(text);
    if (text === '') return '';
    let out = text;
    if (!this.runHasText) {
      if (this.anySubText) out = this.separator + text;
      this.runHasText = true;
      this.anySubText = true;
    }
    return out;
  }

  // The tokenizer's Strip decoder applies to the start of the whole text, i.e. to the first
  // characters this stream ever emits.
  private strip(text: string): string {
    if (this.started || text === '') return text;
    let i = 0;
    while (this.toStrip > 0 && text.startsWith(this.table.stripChar, i)) {
      i += this.table.stripChar.length;
      this.toStrip--;
    }
    const rest = text.slice(i);
    if (rest !== '') this.started = true;
    return rest;
  }
}

/**
 * SentencePiece's decoding of byte pieces: one character at a time, a valid UTF-8 sequence
 * becomes its character, anything else one U+FFFD per byte (no "maximal subpart" grouping).
 */
const CHAR_DECODER = new TextDecoder('utf-8', { ignoreBOM: true }); // keep a U+FEFF: it is text

export function decodeUtf8PerByte(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const n = validSequenceLength(bytes, i);
    if (n === 0) {
      out += REPLACEMENT;
      i += 1;
    } else {
      out += CHAR_DECODER.decode(bytes.subarray(i, i + n));
      i += n;
    }
  }
  return out;
}

/** Length of the well-formed UTF-8 sequence at `i` (RFC 3629: no overlongs, surrogates or > U+10FFFF), or 0. */
function validSequenceLength(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c === 0xe0) lo = 0xa0;
    if (c === 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c === 0xf0) lo = 0x90;
    if (c === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + n > b.length) return 0;
  if (b[i + 1] < lo || b[i + 1] > hi) return 0;
  for (let k = 2; k < n; k++) if (b[i + k] < 0x80 || b[i + k] > 0xbf) return 0;
  return n;
}
