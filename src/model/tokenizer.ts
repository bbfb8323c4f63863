// The package's tokenizer: HF's `tokenizers` (the same Rust code transformers' fast tokenizers
// run) through its npm binding, plus the per-token byte table for streaming (token-bytes.ts).
// encode/decode are asynchronous because the binding runs them off the event loop.

import { readFile } from 'node:fs/promises';
import { Tokenizer } from 'tokenizers';
import { AnswerTextStream, DEFAULT_TOKENIZER_SETTINGS } from './answer-text.js';
import { DecodeStream, type DecodeStreamOptions } from './decode-stream.js';
import { PackageError } from './errors.js';
import { minTokens, unitsPerTokenBound, type TokenizerDocument } from './token-bound.js';
import type { TokenizerSettings } from './manifest-types.js';
import { buildTokenByteTable, type TokenByteTable } from './token-bytes.js';

export { DecodeStream, type DecodeStreamOptions } from './decode-stream.js';

const EMPTY = new Uint8Array(0);

export class TextTokenizer {
  /** Ids the post-processor puts before a text (BOS), found on first use. */
  private prefixLength: Promise<number> | null = null;

  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly table: TokenByteTable,
    /** The most UTF-16 units of text one token stands for (token-bound.ts); Infinity when unknown. */
    readonly unitsPerToken: number,
    /** The manifest's `tokenizer` object: how to run tokenizer.json like the reference. */
    readonly settings: TokenizerSettings,
  ) {}

  /** Loads tokenizer.json; `label` names the file in errors (default: its path). */
  static async load(file: string, label = file, settings: TokenizerSettings = DEFAULT_TOKENIZER_SETTINGS): Promise<TextTokenizer> {
    let tokenizer: Tokenizer;
    let table: TokenByteTable;
    let doc: TokenizerDocument;
    try {
      tokenizer = Tokenizer.fromFile(file);
      doc = JSON.parse(await readFile(file, 'utf8')) as TokenizerDocument;
      table = buildTokenByteTable(doc as Parameters<typeof buildTokenByteTable>[0], label);
    } catch (err) {
      if (err instanceof PackageError) throw err;
      throw new PackageError(label, `cannot be loaded as a tokenizer: ${(err as Error).message}`);
    }
    return new TextTokenizer(tokenizer, table, unitsPerTokenBound(doc, table), settings);
  }

  /** The fewest tokens a text of `length` UTF-16 units can become (0 when no bound is known). */
  minTokens(length: number): number {
    return minTokens(length, this.unitsPerToken);
  }

  /**
   * Token ids of `text`; with special tokens, as the reference's `tokenizer(text).input_ids`
   * (BOS etc.). With `prefix_space` (a legacy:false Llama tokenizer): one space before a
   * non-empty text, and the lone "▁" it makes dropped when a special token follows it, which is
   * what the slow tokenizer does ("▁" + text, `tokens[1:]` before a special token).
   */
  async encode(text: string, addSpecialTokens = true): Promise<number[]> {
    if (!this.settings.prefix_space || text === '') return this.rawEncode(text, addSpecialTokens);
    const ids = await this.rawEncode(' ' + text, addSpecialTokens);
    const k = addSpecialTokens ? await this.postProcessorPrefix() : 0;
    const space = this.tokenizer.tokenToId('\u2581');
    if (ids.length > k + 1 && ids[k] === space && this.table.specialIds.has(ids[k + 1])) ids.splice(k, 1);
    return ids;
  }

  private async rawEncode(text: string, addSpecialTokens: boolean): Promise<number[]> {
    const encoding = await this.tokenizer.encode(text, null, { addSpecialTokens });
    return encoding.getIds();
  }

  private postProcessorPrefix(): Promise<number> {
    this.prefixLength ??= this.rawEncode('', true).then((ids) => ids.length);
    return this.prefixLength;
  }

  /** A stream of the answer text of one generated sequence, as the reference prints it (answer-text.ts). */
  createAnswerStream(options?: { raw?: boolean }): AnswerTextStream {
    return new AnswerTextStream(this.table, this.settings, options?.raw ?? false);
  }

  /** HF's `tokenizer.decode(ids, skip_special_tokens)`. */
  decode(ids: number[], skipSpecialTokens = false): Promise<string> {
    return this.tokenizer.decode(ids, skipSpecialTokens);
  }

  /** The vocabulary string of `id` (e.g. "Ġthe", "▁the", "<0x0A>"), or null. */
  idToToken(id: number): string | null {
    return this.tokenizer.idToToken(id);
  }

  tokenToId(token: string): number | null {
    return this.tokenizer.tokenToId(token);
  }

  /**
   * The UTF-8 bytes `id` contributes to decoded text (may be part of a character); empty for
   * an id the tokenizer does not know (decode() skips those). Shared: do not modify.
   */
  tokenBytes(id: number): Uint8Array {
    return this.table.bytes[id] ?? EMPTY;
  }

  isSpecial(id: number): boolean {
    return this.table.specialIds.has(id);
  }

  /** Ids tokenizer.json marks special (BOS, EOS, pad, chat markers, ...). */
  get specialTokenIds(): ReadonlySet<number> {
    return this.table.specialIds;
  }

  /** Number of token ids, added tokens included. */
  get vocabSize(): number {
    return this.table.bytes.length;
  }

  /** A fresh incremental detokeniser for one generated sequence. */
  createDecodeStream(options?: DecodeStreamOptions): DecodeStream {
    return new DecodeStream(this.table, options);
  }
}
