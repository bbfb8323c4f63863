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
import type { ModelRunner } from '../runtime/model-runner.js';
import { EngineError } from './errors.js';
import { IMAGE_MARKER, type ModelPort } from './model-port.js';
import type { PreparedPrompt } from './sequence.js';
import type { ChatMessage } from './types.js';

export interface PrepareLimits {
  maxImages: number;
}

/** The runner calls prepare needs (a fake can stand in for tests). */
export type PrepareRunner = Pick<ModelRunner, 'encodeImages' | 'embedTokens'>;

export async function preparePrompt(
  messages: ChatMessage[],
  model: ModelPort,
  runner: PrepareRunner,
  limits: PrepareLimits,
  signal?: AbortSignal,
): Promise<PreparedPrompt> {
  const { ids, images } = await model.encodeMessages(messages);
  if (images.length > limits.maxImages) {
    throw new EngineError('too_many_images', `at most ${limits.maxImages} images per request, got ${images.length}`, {
      param: 'messages',
    });
  }
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
  //    and project in the vision worker, all images as one batch -> [count, N, D]
  const t0 = performance.now();
  const decoded = await Promise.all(images.map((bytes) => model.decodeImage(bytes)));
  const decodeSeconds = (performance.now() - t0) / 1000;
  signal?.throwIfAborted();
  let imageEmbeds: Float32Array | null = null;
  let imagePreprocess = decodeSeconds;
  let visionEncoder = 0;
  if (decoded.length > 0) {
    const encoded = await runner.encodeImages(decoded);
    imageEmbeds = encoded.embeds.data as Float32Array;
    imagePreprocess += encoded.preprocessSeconds;
    visionEncoder = encoded.visionSeconds;
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
      embeds.set(imageEmbeds!.subarray(image * N * D, (image + 1) * N * D), pos * D);
      image++;
      pos += N;
    } else {
      embeds.set(textEmbeds.subarray(text * D, (text + 1) * D), pos * D);
      text++;
      pos++;
    }
  }
  return { embeds, length, ids, imageTokens: images.length * N, timings: { imagePreprocess, visionEncoder } };
}
