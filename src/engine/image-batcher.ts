// Batches the vision encoder's work across requests. Images queued while the loop is busy with
// the current tick's callbacks, or while the previous encode runs, go to the vision worker as one
// encodeImages call: one vision_encoder + connector run over [B,3,H,W] costs far less than B runs
// of [1,3,H,W] (weights are read once; on a GPU the batch fills the device). An idle server adds
// no delay: the first image waits only for the rest of the current tick.
//
// Batches hold at most `maxImages` images: the encoder's activations grow with the batch and a
// burst of image requests must not exhaust memory (a known vision-server failure).

import type { RgbImage } from '../model/index.js';
import type { ModelRunner } from '../runtime/model-runner.js';

export type ImageEncoder = Pick<ModelRunner, 'encodeImages'>;

export interface EncodedImage {
  /** [N, D] this image's connector outputs (its own buffer). */
  embeds: Float32Array;
  /** The batch it was encoded in: its number and the seconds its preprocessing and encoder took. */
  batch: number;
  preprocessSeconds: number;
  visionSeconds: number;
}

interface Pending {
  image: RgbImage;
  resolve(encoded: EncodedImage): void;
  reject(err: unknown): void;
}

export class ImageBatcher {
  private readonly encoder: ImageEncoder;
  private readonly maxImages: number;
  private queue: Pending[] = [];
  private draining = false;
  /** encodeImages calls made and the images they carried (mean batch = images / calls). */
  readonly counters = { calls: 0, images: 0 };

  constructor(encoder: ImageEncoder, maxImages: number) {
    if (!(Number.isInteger(maxImages) && maxImages >= 1)) throw new RangeError(`maxImages must be a positive integer, got ${maxImages}`);
    this.encoder = encoder;
    this.maxImages = maxImages;
  }

  /** Queues one decoded image (its buffer is transferred to the worker: do not use it afterwards). */
  encode(image: RgbImage): Promise<EncodedImage> {
    return new Promise((resolve, reject) => {
      this.queue.push({ image, resolve, reject });
      if (!this.draining) {
        this.draining = true;
        // Not at once: the other images of this request, and of requests whose bytes were
        // decoded in the same tick, join the batch.
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxImages);
      const number = ++this.counters.calls;
      this.counters.images += batch.length;
      try {
        const out = await this.encoder.encodeImages(batch.map((p) => p.image));
        const data = out.embeds.data as Float32Array;
        if (data.length % batch.length !== 0) throw new Error(`the encoder returned ${data.length} values for ${batch.length} images`);
        const size = data.length / batch.length;
        batch.forEach((p, i) =>
          p.resolve({
            // A buffer per image, so that a cached image does not keep the whole batch alive.
            embeds: ownsBuffer(data) && batch.length === 1 ? data : data.slice(i * size, (i + 1) * size),
            batch: number,
            preprocessSeconds: out.preprocessSeconds,
            visionSeconds: out.visionSeconds,
          }),
        );
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    this.draining = false;
  }
}

function ownsBuffer(a: Float32Array): boolean {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength;
}
