// Prompt string -> token ids and image positions, in the package's image_token_mode
// (docs/model-package.md, "Tokenizing a prompt").
//
// splice (TinyLLaVA_Factory): the placeholder is not a vocabulary token. Split the string on
// it, tokenize every chunk on its own WITH special tokens, keep the BOS of the first chunk only,
// and put N image embeddings between chunks:
//
//   "<s>SYS USER: " | IMG x N | "\nWhat are these? ASSISTANT:"
//   [BOS] chunk0-ids  | image 0 | chunk1-ids (its BOS dropped)
//
// token (transformers Llava): the placeholder is the token image_token_id; tokenize the whole
// string once, and each occurrence of that id becomes N image positions.

import { PromptError } from './errors.js';
import type { Manifest } from './manifest-types.js';
import { renderPrompt, type PromptMessage } from './template.js';

/** What stands for one image in `ids` (LLaVA's IMAGE_TOKEN_INDEX), as in the golden files. */
export const IMAGE_TOKEN_INDEX = -200;

export type PromptSegment = { type: 'text'; ids: number[] } | { type: 'image'; index: number };

export interface TokenizedPrompt {
  /** Text runs and images in input order; no empty text run. */
  segments: PromptSegment[];
  /** Text ids with IMAGE_TOKEN_INDEX at each image (one entry per image). */
  ids: number[];
  /** Positions the decoder sees: text ids plus num_image_tokens per image. */
  inputLength: number;
  /** [start, length] of each image's embeddings in that input. */
  imageSpans: [number, number][];
}

export interface BuiltPrompt extends TokenizedPrompt {
  text: string;
  imageCount: number;
}

/** The part of a tokenizer this module needs (TextTokenizer has it). */
export interface PromptEncoder {
  encode(text: string, addSpecialTokens?: boolean): Promise<number[]>;
  /** The fewest tokens a text of this many UTF-16 units can become, known without tokenizing it (token-bound.ts). */
  minTokens?(length: number): number;
}

type PromptManifest = Pick<Manifest, 'prompt' | 'text' | 'vision'>;

export interface PromptOptions {
  /** Refuse (PromptError too_long) a prompt that surely has at least this many positions, before tokenizing it. */
  maxPositions?: number;
  /** End with the template's generation prompt (default true); false allows ending on an answer. */
  generationPrompt?: boolean;
}

/** Renders the messages and tokenizes the result. */
export async function buildPrompt(
  messages: readonly PromptMessage[],
  manifest: PromptManifest,
  tokenizer: PromptEncoder,
  options: PromptOptions = {},
): Promise<BuiltPrompt> {
  const { text, imageCount } = renderPrompt(messages, manifest.prompt, { generationPrompt: options.generationPrompt });
  return { text, imageCount, ...(await tokenizePrompt(text, imageCount, manifest, tokenizer, options)) };
}

export async function tokenizePrompt(
  text: string,
  imageCount: number,
  manifest: PromptManifest,
  tokenizer: PromptEncoder,
  options: Pick<PromptOptions, 'maxPositions'> = {},
): Promise<TokenizedPrompt> {
  if (options.maxPositions !== undefined && tokenizer.minTokens) {
    refuseSurelyTooLong(text, imageCount, manifest, (length) => tokenizer.minTokens!(length), options.maxPositions);
  }
  const runs =
    manifest.prompt.image_token_mode === 'splice'
      ? await spliceRuns(text, manifest, tokenizer)
      : await tokenRuns(text, manifest, tokenizer);
  const found = runs.length - 1;
  if (found !== imageCount) {
    throw new PromptError(
      'image_count_mismatch',
      `the prompt has ${found} image placeholder(s) for ${imageCount} image(s)`,
    );
  }
  return assemble(runs, manifest.vision.num_image_tokens);
}

/**
 * The cheap check before tokenizing: the text without its placeholders is at least
 * minTokens(text) tokens, each image num_image_tokens positions.
 */
function refuseSurelyTooLong(
  text: string,
  imageCount: number,
  manifest: PromptManifest,
  minTokens: (length: number) => number,
  maxPositions: number,
): void {
  const textUnits = Math.max(0, text.length - imageCount * manifest.prompt.image_placeholder.length);
  const atLeast = minTokens(textUnits) + imageCount * manifest.vision.num_image_tokens;
  if (atLeast >= maxPositions) {
    throw new PromptError(
      'too_long',
      `the prompt is at least ${atLeast} tokens (${text.length} characters, ${imageCount} images x ${manifest.vision.num_image_tokens}), ` +
        `the model's context is ${maxPositions}`,
    );
  }
}

/** Text ids between images: image k sits between runs[k] and runs[k + 1]. */
async function spliceRuns(text: string, manifest: PromptManifest, tokenizer: PromptEncoder): Promise<number[][]> {
  const chunks = text.split(manifest.prompt.image_placeholder);
  const runs = await Promise.all(chunks.map((chunk) => tokenizer.encode(chunk, true)));
  const bos = manifest.text.bos_token_id;
  // Factory keeps one BOS: when the first chunk starts with it, later chunks lose theirs.
  if (bos !== null && runs[0][0] === bos) {
    for (let i = 1; i < runs.length; i++) if (runs[i][0] === bos) runs[i] = runs[i].slice(1);
  }
  return runs;
}

async function tokenRuns(text: string, manifest: PromptManifest, tokenizer: PromptEncoder): Promise<number[][]> {
  const imageId = manifest.prompt.image_token_id;
  if (imageId === null) throw new RangeError('image_token_mode "token" needs prompt.image_token_id');
  const ids = await tokenizer.encode(text, true);
  const runs: number[][] = [[]];
  for (const id of ids) {
    if (id === imageId) runs.push([]);
    else runs[runs.length - 1].push(id);
  }
  return runs;
}

function assemble(runs: number[][], tokensPerImage: number): TokenizedPrompt {
  const segments: PromptSegment[] = [];
  const ids: number[] = [];
  const imageSpans: [number, number][] = [];
  let position = 0;
  runs.forEach((run, k) => {
    if (k > 0) {
      segments.push({ type: 'image', index: k - 1 });
      ids.push(IMAGE_TOKEN_INDEX);
      imageSpans.push([position, tokensPerImage]);
      position += tokensPerImage;
    }
    if (run.length > 0) {
      segments.push({ type: 'text', ids: run });
      // A loop, not push(...run): spreading a run of 125k ids overflows the call stack.
      for (const id of run) ids.push(id);
      position += run.length;
    }
  });
  return { segments, ids, inputLength: position, imageSpans };
}
