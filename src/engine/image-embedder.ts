// Decoded images -> connector outputs, the way the engine gets them: from the image cache when
// the same pixels were encoded before (or are being encoded for another request right now),
// otherwise from the batcher, which shares vision-encoder calls across requests.
//
// A hit is an image that did not go to the vision encoder for this request (found in the cache
// or joined an encode already under way); a miss is one that did. With the cache off (0 bytes)
// nothing is hashed, stored or counted.

import { performance } from 'node:perf_hooks';
import type { RgbImage } from '../model/index.js';
import { ImageBatcher, type EncodedImage, type ImageEncoder } from './image-batcher.js';
import { ImageCache } from './image-cache.js';
import { imageKey } from './image-key.js';

export interface ImageEmbeddings {
  /** One [N, D] array per image, in order; shared with the cache: read, never write. */
  embeds: Float32Array[];
  /** Hashing, and preprocessing (resize, normalise) of the batches these images went through. */
  preprocessSeconds: number;
  /** The rest of the wait for the encoder, batches ahead of ours included (0 when every image hit). */
  visionSeconds: number;
  /** The images' content keys (image-key.ts), when they were computed (for the prefix cache). */
  keys?: string[];
}

/** What preparePrompt needs for images; the engine's embedder or a plain runner call. */
export interface ImageSource {
  embedImages(images: RgbImage[]): Promise<ImageEmbeddings>;
}

export interface ImageCacheStats {
  hits: number;
  misses: number;
  bytes: number;
  entries: number;
}

export interface ImageEmbedderOptions {
  /** Cache capacity in bytes of embeddings; 0 turns the cache off. */
  cacheBytes: number;
  /** Most images per vision-encoder call. */
  maxBatchImages: number;
  /** imageKeyNamespace() of the vision graphs and preprocessing settings. */
  namespace: string;
  /** Compute every image's content key even with the cache off (the prefix cache keys image positions by it). */
  keyImages?: boolean;
}

export class ImageEmbedder implements ImageSource {
  private readonly batcher: ImageBatcher;
  private readonly cache: ImageCache | null;
  private readonly namespace: string;
  private readonly keyImages: boolean;
  /** Encodes under way, by key, so that concurrent requests for one image share one encode. */
  private readonly inFlight = new Map<string, Promise<EncodedImage>>();
  private hits = 0;
  private misses = 0;

  constructor(encoder: ImageEncoder, options: ImageEmbedderOptions) {
    this.batcher = new ImageBatcher(encoder, options.maxBatchImages);
    this.cache = options.cacheBytes > 0 ? new ImageCache(options.cacheBytes) : null;
    this.namespace = options.namespace;
    this.keyImages = options.keyImages ?? false;
  }

  /** The cache's numbers, or null when it is off. */
  cacheStats(): ImageCacheStats | null {
    return this.cache ? { hits: this.hits, misses: this.misses, ...this.cache.usage() } : null;
  }

  /** Vision-encoder calls and the images they carried. */
  get encoderCounters(): { calls: number; images: number } {
    return { ...this.batcher.counters };
  }

  /** The images' buffers may be transferred to the vision worker: do not use them afterwards. */
  async embedImages(images: RgbImage[]): Promise<ImageEmbeddings> {
    const start = performance.now();
    const cache = this.cache;
    // Keys first, all of them: encoding transfers (detaches) an image's pixels.
    const keys = cache || this.keyImages ? await Promise.all(images.map((image) => imageKey(this.namespace, image))) : null;
    const hashSeconds = (performance.now() - start) / 1000;
    const results = images.map((image, i): Float32Array | Promise<EncodedImage> => {
      if (!cache || !keys) return this.batcher.encode(image);
      const key = keys[i];
      const cached = cache.get(key);
      if (cached) {
        this.hits++;
        return cached;
      }
      const running = this.inFlight.get(key);
      if (running) {
        this.hits++;
        return running;
      }
      this.misses++;
      const encoding = this.batcher.encode(image).then((encoded) => {
        cache.set(key, encoded.embeds);
        return encoded;
      });
      this.inFlight.set(key, encoding);
      // Whether it worked or not, the next request for this image looks in the cache again.
      const forget = (): void => void this.inFlight.delete(key);
      encoding.then(forget, forget);
      return encoding;
    });
    const settled = await Promise.all(results);

    // A request's preprocessing time is that of the batches it waited for (counted once each);
    // the rest of its wait, up to its last image, is the encoder's.
    const batches = new Map<number, number>();
    for (const r of settled) if (!(r instanceof Float32Array)) batches.set(r.batch, r.preprocessSeconds);
    const preprocessSeconds = hashSeconds + [...batches.values()].reduce((a, b) => a + b, 0);
    const waited = (performance.now() - start) / 1000;
    return {
      embeds: settled.map((r) => (r instanceof Float32Array ? r : r.embeds)),
      preprocessSeconds,
      visionSeconds: batches.size === 0 ? 0 : Math.max(0, waited - preprocessSeconds),
      ...(keys ? { keys } : {}),
    };
  }
}
