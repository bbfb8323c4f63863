// Turns a request's messages into the prompt's embeddings, before the request queues for the
// decoder:
//
//   ids:     [BOS] t t t  IMG  t t t t  IMG  t t          (IMG = one IMAGE_MARKER per image)
//   embeds:  [BOS] t t t  e0 ... e(N-1)  t t t t  e0 ... e(N-1)  t t
//            \_ embed_tokens _/\_ vision_encoder -> connector, N = num_image_tokens _/
//
// Text is embedded by embed_tokens in one call over all text ids; each image's N connector
// outputs are spliced in at its marker (docs/model-package.md, "Tokenizing a prompt").

import { performance } from 'node:perf_hooks';
import type { RgbImage } from '../model/index.js';
import type { ModelRunner } from '../runtime/model-runner.js';
import { EngineError } from './errors.js';
import type { ImageEmbeddings, ImageSource } from './image-embedder.js';
import { IMAGE_MARKER, type ModelPort } from './model-port.js';
import type { PreparedPrompt } from './sequence.js';
import type { ChatMessage } from './types.js';

export interface PrepareLimits {
  maxImages: number;
}

/** What prepare needs below it: token embeddings, and image embeddings (the engine's are cached and batched). */
export type PrepareRunner = Pick<ModelRunner, 'embedTokens'> & ImageSource;

/**
 * A PrepareRunner straight over a runner: each request's images in one encodeImages call of
 * their own, no cache (tests compare the engine's cached, batched path against this one).
 */
export function directRunner(runner: Pick<ModelRunner, 'encodeImages' | 'embedTokens'>): PrepareRunner {
  return {
    embedTokens: (ids) => runner.embedTokens(ids),
    async embedImages(images: RgbImage[]): Promise<ImageEmbeddings> {
      const out = await runner.encodeImages(images);
      const data = out.embeds.data as Float32Array;
      const size = data.length / images.length;
      return {
        embeds: images.map((_, i) => data.subarray(i * size, (i + 1) * size)),
        preprocessSeconds: out.preprocessSeconds,
        visionSeconds: out.visionSeconds,
      };
    },
  };
}

/** An image's error, told which image it is (the api layer turns that into the image's field). */
function atImage(err: unknown, image: number): unknown {
  if (!(err instanceof EngineError) || err.image !== null) return err;
  return new EngineError(err.code, err.message, { param: err.param ?? undefined, cause: err.cause, image });
}

export async function preparePrompt(
  messages: ChatMessage[],
  model: ModelPort,
  runner: PrepareRunner,
  limits: PrepareLimits,
  signal?: AbortSignal,
): Promise<PreparedPrompt> {
  const imageParts = messages.reduce((n, m) => n + (typeof m.content === 'string' ? 0 : m.content.filter((p) => p.type === 'image').length), 0);
  if (imageParts > limits.maxImages) {
    throw new EngineError('too_many_images', `at most ${limits.maxImages} images per request, got ${imageParts}`, {
      param: 'messages',
    });
  }
  // A text that cannot fit is refused from its length, before it is tokenized whole.
  const { ids, images } = await model.encodeMessages(messages, { maxPositions: model.maxContext });
  const markers = ids.filter((id) => id === IMAGE_MARKER).length;
  if (markers !== images.length) throw new EngineError('internal', `prompt has ${markers} image markers for ${images.length} images`);
  const N = model.numImageTokens;
  const D = model.text.hiddenSize;
  const length = ids.length + images.length * (N - 1);
  if (length >= model.maxContext) {
    throw new EngineError(
      'context_length_exceeded',
      `the prompt is ${length} tokens (${images.length} images x ${N}), the model's context is ${model.maxContext}`,
      { param: 'messages' },
    );
  }

  // 1. images: decode here (sharp works off the event loop), then resize, normalise, encode
  //    and project in the vision worker (or find them in the image cache) -> count x [N, D]
  const t0 = performance.now();
  const decoded = await Promise.all(images.map((bytes, k) => model.decodeImage(bytes).catch((err: unknown) => Promise.reject(atImage(err, k)))));
  const decodeSeconds = (performance.now() - t0) / 1000;
  signal?.throwIfAborted();
  let imageEmbeds: Float32Array[] = [];
  let imagePreprocess = decodeSeconds;
  let visionEncoder = 0;
  let imageKeys: string[] | undefined = [];
  if (decoded.length > 0) {
    const encoded = await runner.embedImages(decoded);
    if (encoded.embeds.some((e) => e.length !== N * D)) throw new EngineError('internal', `image embeddings are not ${N} x ${D}`);
    imageEmbeds = encoded.embeds;
    imagePreprocess += encoded.preprocessSeconds;
    visionEncoder = encoded.visionSeconds;
    imageKeys = encoded.keys;
  }
  signal?.throwIfAborted();

  // 2. text ids -> [T, D] embeddings, then splice
  const textIds = ids.filter((id) => id !== IMAGE_MARKER);
  const textEmbeds = await runner.embedTokens(textIds);
  const embeds = new Float32Array(length * D);
  let pos = 0;
  let text = 0;
  let image = 0;
  for (const id of ids) {
    if (id === IMAGE_MARKER) {
      embeds.set(imageEmbeds[image], pos * D);
      image++;
      pos += N;
    } else {
      embeds.set(textEmbeds.subarray(text * D, (text + 1) * D), pos * D);
      text++;
      pos++;
    }
  }
  return { embeds, length, ids, imageTokens: images.length * N, imageKeys, timings: { imagePreprocess, visionEncoder } };
}
