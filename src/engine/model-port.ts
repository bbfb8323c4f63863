// What the engine needs from the model layer (src/model/), in one narrow interface, so that the
// generation loop does not depend on how packages, tokenizers, templates and images are handled,
// and tests can substitute a part (e.g. the stop tokens).

import type { ImagePreprocessing, RgbImage } from '../model/index.js';
import type { GraphName } from '../runtime/worker-protocol.js';
import type { ChatMessage } from './types.js';

/** Marks an image position in prompt ids, as in the golden files (LLaVA's IMAGE_TOKEN_INDEX). */
export const IMAGE_MARKER = -200;

export interface EncodedPrompt {
  /** Text token ids with one IMAGE_MARKER where each image's embeddings go. */
  ids: number[];
  /** The images' encoded bytes, in the order of their markers. */
  images: Uint8Array[];
}

export interface EncodeOptions {
  maxPositions?: number;
  /** End with the template's generation prompt (default true). */
  generationPrompt?: boolean;
}

/** Incremental detokenization of one generated sequence: complete characters only. */
export interface Detokenizer {
  /** The text `id` completes ('' while a character is still partial). */
  push(id: number): string;
  /** What is left at the end (an incomplete character becomes U+FFFD). */
  flush(): string;
}

export interface ModelPort {
  readonly name: string;
  readonly maxContext: number;
  /** Absolute paths of the four graphs. */
  readonly graphs: Record<GraphName, string>;
  readonly text: { numLayers: number; hiddenSize: number; numKvHeads: number; headDim: number; vocabSize: number };
  readonly numImageTokens: number;
  readonly imagePreprocessing: ImagePreprocessing;
  /** Tokens that end generation (EOS and the template's stop tokens). */
  readonly stopTokenIds: readonly number[];
  /** The package's HF tokenizer.json, from which structured outputs build their token trie. */
  readonly tokenizerPath: string;

  /** The text that stands for an image in the package's prompt (e.g. "<image>"). */
  readonly imagePlaceholder: string;

  /**
   * Renders the conversation with the package's template and tokenizes it (ending with the
   * generation prompt unless told otherwise). A prompt that surely has `maxPositions` or more
   * positions is refused (context_length_exceeded) before it is tokenized.
   */
  encodeMessages(messages: ChatMessage[], options?: EncodeOptions): Promise<EncodedPrompt>;
  /** Token ids of a plain text (HF's `tokenizer(text, add_special_tokens)`), refused early as above. */
  encodeText(text: string, addSpecialTokens: boolean, options?: Pick<EncodeOptions, 'maxPositions'>): Promise<number[]>;
  /** HF's `tokenizer.decode(ids)`, special tokens kept; rejects (invalid_request) ids outside the vocabulary. */
  decode(ids: number[]): Promise<string>;
  /** The vocabulary string of each id (e.g. "Ġthe"), as HF's convert_ids_to_tokens. */
  tokenStrings(ids: number[]): string[];
  /** Decodes encoded image bytes to RGB as the reference does; rejects with an `invalid_image` EngineError. */
  decodeImage(bytes: Uint8Array): Promise<RgbImage>;
  /**
   * A fresh detokenizer for one generated sequence: the answer text as the reference prints it
   * (special tokens produce none); with `raw`, the decoded text alone, without the reference's
   * clean-up and strip (for answers whose exact text a grammar fixed).
   */
  createDetokenizer(options?: { raw?: boolean }): Detokenizer;
  /** The raw bytes one token stands for (may be part of a UTF-8 sequence), for logprobs. */
  tokenBytes(id: number): number[];
}
