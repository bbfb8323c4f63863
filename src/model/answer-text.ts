// The answer text of generated ids, streamed: the reference's
// `tokenizer.batch_decode(ids, skip_special_tokens=True)[0]`, with its
// `clean_up_tokenization_spaces` and (TinyLLaVA_Factory and TinyLLaVABench) `.strip()`, as the
// package's manifest `tokenizer` object says. Three stages, each emitting only final text:
//
//   DecodeStream (ids -> text) -> CleanUpStream (" ." -> "." ...) -> AnswerStrip (str.strip())

import { DecodeStream } from './decode-stream.js';
import type { TokenizerSettings } from './manifest-types.js';
import type { TokenByteTable } from './token-bytes.js';

/** What a package without a `tokenizer` object gets: tokenizer.json's decoder, answer stripped. */
export const DEFAULT_TOKENIZER_SETTINGS: TokenizerSettings = {
  reference: 'tokenizer.json',
  prefix_space: false,
  decode: 'tokenizer_json',
  byte_fallback: 'hf',
  run_leading_space: 'tokenizer_json',
  added_token_ids: [],
  added_token_separator: '',
  added_token_metaspace: false,
  clean_up_tokenization_spaces: false,
  strip_answer: true,
};

// transformers' PreTrainedTokenizerBase.clean_up_tokenization, in its order: each a global,
// left-to-right, non-overlapping replace (Python's str.replace).
const CLEAN_UPS: readonly [string, string][] = [
  [' .', '.'], [' ?', '?'], [' !', '!'], [' ,', ','], [" ' ", "'"],
  [" n't", "n't"], [" 'm", "'m"], [" 's", "'s"], [" 've", "'ve"], [" 're", "'re"],
];

export function cleanUpTokenization(text: string): string {
  for (const [from, to] of CLEAN_UPS) text = text.split(from).join(to);
  return text;
}

/**
 * clean_up_tokenization on a stream. Every pattern starts with a space and is at most 4
 * characters long, and a replacement only removes spaces; so where the 3 characters before a
 * position are not spaces, no match of any pass can reach across it, and the text before it
 * cleans up the same whatever follows. Text is held back until such a position.
 */
export class CleanUpStream {
  private pending = '';

  push(text: string): string {
    this.pending += text;
    const cut = lastCut(this.pending);
    if (cut === 0) return '';
    const out = cleanUpTokenization(this.pending.slice(0, cut));
    this.pending = this.pending.slice(cut);
    return out;
  }

  flush(): string {
    const out = cleanUpTokenization(this.pending);
    this.pending = '';
    return out;
  }
}

function lastCut(s: string): number {
  let run = 0; // non-space characters seen, going back from the end
  for (let p = s.length; p > 0; p--) {
    if (s[p - 1] === ' ') run = 0;
    else if (++run === 3) return p + 2;
  }
  return 0;
}

// Python's str.isspace() characters (what str.strip() removes); not JavaScript's trim() set,
// which adds U+FEFF and leaves out U+001C-U+001F and U+0085.
const PY_SPACE = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const LEADING = new RegExp(`^[${PY_SPACE}]+`);
const TRAILING = new RegExp(`[${PY_SPACE}]+$`);

/** str.strip() on a stream: leading whitespace dropped, trailing whitespace held until more text follows it. */
export class AnswerStrip {
  private started = false;
  private held = '';

  push(text: string): string {
    if (!this.started) {
      text = text.replace(LEADING, '');
      if (text === '') return '';
      this.started = true;
    }
    const all = this.held + text;
    const m = TRAILING.exec(all);
    const end = m ? m.index : all.length;
    this.held = all.slice(end);
    return all.slice(0, end);
  }

  flush(): string {
    this.held = '';
    return '';
  }
}

interface TextStage {
  push(text: string): string;
  flush(): string;
}

/** The answer stream of one generated sequence; `raw`: the decode stage alone (no clean-up, no strip). */
export class AnswerTextStream {
  private readonly decode: DecodeStream;
  private readonly stages: TextStage[] = [];

  constructor(table: TokenByteTable, settings: TokenizerSettings = DEFAULT_TOKENIZER_SETTINGS, raw = false) {
    this.decode = new DecodeStream(table, {
      skipSpecialTokens: true,
      byteFallback: settings.byte_fallback,
      runLeadingSpace: settings.run_leading_space,
      addedTokenIds: settings.decode === 'slow' ? settings.added_token_ids : [],
      addedTokenSeparator: settings.added_token_separator,
      addedTokenMetaspace: settings.added_token_metaspace,
    });
    if (raw) return;
    if (settings.clean_up_tokenization_spaces) this.stages.push(new CleanUpStream());
    if (settings.strip_answer) this.stages.push(new AnswerStrip());
  }

  push(id: number): string {
    return this.stages.reduce((text, stage) => stage.push(text), this.decode.push(id));
  }

  flush(): string {
    let text = this.decode.flush();
    for (const stage of this.stages) text = stage.push(text) + stage.flush();
    return text;
  }
}
