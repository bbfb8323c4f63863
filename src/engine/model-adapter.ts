// The engine's ModelPort over the model layer (src/model/): package loading and validation,
// tokenizer, prompt building, image decoding. Model-layer errors become EngineErrors here.

import {
  buildPrompt,
  decodeImage,
  ImageError,
  loadPackage,
  loadPackageTokenizer,
  PackageError,
  PromptError,
  type TextTokenizer,
  type PromptMessage,
} from '../model/index.js';
import { EngineError } from './errors.js';
import type { Detokenizer, EncodedPrompt, EncodeOptions, ModelPort } from './model-port.js';
import type { ChatMessage } from './types.js';

export interface ModelLimits {
  /** Largest width x height of an input image, checked before decoding. */
  maxImagePixels: number;
}

export async function loadModelPort(packageDir: string, limits: ModelLimits): Promise<ModelPort> {
  let pkg;
  let tokenizer: TextTokenizer;
  try {
    pkg = await loadPackage(packageDir);
    tokenizer = await loadPackageTokenizer(pkg);
  } catch (err) {
    // The message names the file, and the directory when it matters; no need to say it twice.
    if (err instanceof PackageError) {
      throw new EngineError('model_error', err.message.includes(packageDir) ? err.message : `${packageDir}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  const { manifest, paths } = pkg;
  const t = manifest.text;
  // Ids past the tokenizer's vocabulary (logit rows beyond it, e.g. phi-2's 51200) have no text.
  const known = (id: number): boolean => id >= 0 && id < tokenizer.vocabSize;
  const promptError = (err: unknown): unknown => {
    if (!(err instanceof PromptError)) return err;
    const code = err.code === 'too_long' ? 'context_length_exceeded' : 'invalid_request';
    return new EngineError(code, err.message, { param: 'messages', cause: err });
  };

  return {
    name: manifest.name,
    maxContext: manifest.max_context,
    graphs: {
      vision_encoder: paths.vision_encoder,
      connector: paths.connector,
      embed_tokens: paths.embed_tokens,
      decoder: paths.decoder,
    },
    text: {
      numLayers: t.num_layers,
      hiddenSize: t.hidden_size,
      numKvHeads: t.num_key_value_heads,
      headDim: t.head_dim,
      vocabSize: t.vocab_size,
    },
    numImageTokens: manifest.vision.num_image_tokens,
    imagePreprocessing: manifest.image_preprocessing,
    stopTokenIds: [...new Set([...t.eos_token_ids, ...manifest.prompt.stop_token_ids])],
    imagePlaceholder: manifest.prompt.image_placeholder,
    tokenizerPath: paths.tokenizer,

    async encodeMessages(messages: ChatMessage[], options: EncodeOptions = {}): Promise<EncodedPrompt> {
      const images: Uint8Array[] = [];
      const promptMessages: PromptMessage[] = messages.map((m) => ({
        role: m.role,
        content:
          typeof m.content === 'string'
            ? m.content
            : m.content.map((part) => {
                if (part.type === 'text') return part;
                images.push(part.data);
                return { type: 'image' as const };
              }),
      }));
      try {
        const prompt = await buildPrompt(promptMessages, manifest, tokenizer, options);
        return { ids: prompt.ids, images };
      } catch (err) {
        throw promptError(err);
      }
    },

    async encodeText(text: string, addSpecialTokens: boolean, options: Pick<EncodeOptions, 'maxPositions'> = {}): Promise<number[]> {
      const least = tokenizer.minTokens(text.length);
      if (options.maxPositions !== undefined && least >= options.maxPositions) {
        throw new EngineError(
          'context_length_exceeded',
          `the text is at least ${least} tokens (${text.length} characters), the model's context is ${options.maxPositions}`,
          { param: 'prompt' },
        );
      }
      return tokenizer.encode(text, addSpecialTokens);
    },

    async decode(ids: number[]): Promise<string> {
      const bad = ids.findIndex((id) => !known(id));
      if (bad >= 0) {
        throw new EngineError('invalid_request', `token ${ids[bad]} is not in the vocabulary (0 to ${tokenizer.vocabSize - 1})`, { param: `tokens[${bad}]` });
      }
      return tokenizer.decode(ids, false);
    },

    tokenStrings(ids: number[]): string[] {
      return ids.map((id) => (known(id) ? (tokenizer.idToToken(id) ?? '') : ''));
    },

    async decodeImage(bytes: Uint8Array) {
      try {
        const image = await decodeImage(bytes, { maxPixels: limits.maxImagePixels });
        // A buffer of its own, so that it can be moved to the vision worker without copying.
        return { ...image, data: new Uint8Array(image.data) };
      } catch (err) {
        if (err instanceof ImageError) throw new EngineError('invalid_image', err.message, { param: 'messages', cause: err });
        throw err;
      }
    },

    createDetokenizer(options?: { raw?: boolean }): Detokenizer {
      const stream = tokenizer.createAnswerStream(options);
      return { push: (id) => (known(id) ? stream.push(id) : ''), flush: () => stream.flush() };
    },

    tokenBytes(id: number): number[] {
      return known(id) ? [...tokenizer.tokenBytes(id)] : [];
    },
  };
}
