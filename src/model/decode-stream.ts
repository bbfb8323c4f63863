// Incremental detokenisation: feed generated token ids one at a time, get back only text that
// is final. Concatenating every push() and the final flush() gives exactly the tokenizer's
// decode() of the whole sequence, invalid bytes included:
//
// - Byte-level tokenizers: a token may end inside a UTF-8 character; bytes are held until the
//   character completes. decode() replaces invalid sequences (maximal subparts) with U+FFFD,
//   and so does the streaming TextDecoder.
// - ByteFallback tokenizers: a run of "<0xHH>" tokens is held until a text token (or the end)
//   closes it, because HF decodes a run as a whole: its UTF-8 text if the whole run is valid,
//   otherwise one U+FFFD per byte, even for bytes that looked fine on their own. This delays a
//   character spelled in bytes by one token.

import type { TokenByteTable } from './token-bytes.js';

export interface DecodeStreamOptions {
  /** Drop tokens the tokenizer marks special, like decode(ids, skip_special_tokens=True). */
  skipSpecialTokens?: boolean;
}

const REPLACEMENT = '\uFFFD';

export class DecodeStream {
  // ignoreBOM: keep a U+FEFF in the text (by default TextDecoder swallows a leading one).
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private readonly strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  private readonly skipSpecial: boolean;
  /** Pending ByteFallback run. */
  private run: number[] = [];
  /** Leading strip characters still to remove from the very start of the text. */
  private toStrip: number;
  private started = false;

  constructor(
    private readonly table: TokenByteTable,
    options: DecodeStreamOptions = {},
  ) {
    this.skipSpecial = options.skipSpecialTokens ?? false;
    this.toStrip = table.stripLeading;
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
    if (this.table.byteTokens) {
      if (this.table.byteTokens[id]) {
        this.run.push(bytes[0]);
        return '';
      }
      // Text tokens of these tokenizers are whole strings: no partial characters.
      return this.strip(this.closeRun() + this.utf8.decode(bytes));
    }
    return this.strip(this.utf8.decode(bytes, { stream: true }));
  }

  /** Whatever is left: an open byte run, or an incomplete character (U+FFFD). */
  flush(): string {
    return this.strip(this.closeRun() + this.utf8.decode());
  }

  private closeRun(): string {
    if (this.run.length === 0) return '';
    const run = Uint8Array.from(this.run);
    this.run = [];
    try {
      return this.strictUtf8.decode(run);
    } catch {
      return REPLACEMENT.repeat(run.length);
    }
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
