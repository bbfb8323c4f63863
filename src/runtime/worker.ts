// A model worker thread: owns one RuntimeBackend (backend.ts), whose sessions are created once
// and kept for the worker's life (session runs block their thread, and sessions leak when
// recreated) and, when it runs the decoder, the KV cache. Requests are handled one at a time,
// in arrival order, so that cache updates and decoder steps never interleave.

import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { preprocessImage, type RgbImage } from '../model/index.js';
import type { BackendLoader, DecoderBackend, RuntimeBackend } from './backend.js';
import { PREFIX_BLOCK_POSITIONS, PrefixCache } from './prefix-cache.js';
import {
  transferables,
  type EncodedImages,
  type WorkerHello,
  type WorkerInit,
  type WorkerRequest,
  type WorkerResponse,
  type WorkerResult,
} from './worker-protocol.js';

const port = parentPort;
if (!port) throw new Error('worker.ts must run in a worker thread');
const init = workerData as WorkerInit;

// Imported on demand, so that a native worker never loads onnxruntime-node's binding (and with
// it a second ONNX Runtime core next to the onnxruntime-gpu wheel's).
const loaders: Record<WorkerInit['runtime'], BackendLoader> = {
  js: async (i) => (await import('./js-backend.js')).loadJsBackend(i),
  native: async (i) => (await import('./native-backend.js')).loadNativeBackend(i),
};

let backend: RuntimeBackend | null = null;
let prefix: PrefixCache | null = null;

async function load(): Promise<WorkerHello> {
  backend = await loaders[init.runtime](init);
  if (backend.decoder) {
    prefix = new PrefixCache(backend.decoder.cache, init.prefixCache ?? { capacityBytes: 0, blockPositions: PREFIX_BLOCK_POSITIONS });
  }
  return { type: 'ready', io: backend.graphs };
}

/** Sequences are allocated and freed through the prefix cache, which lives beside the KV cache. */
function prefixCache(): PrefixCache {
  if (!prefix) throw new Error('this worker has no decoder');
  return prefix;
}

function decoder(): DecoderBackend {
  if (!backend?.decoder) throw new Error('this worker has no decoder');
  return backend.decoder;
}

/**
 * Decoded RGB images -> resize + normalise (the model layer's PIL-exact preprocessing, CPU-heavy,
 * hence here and not on the main thread) -> vision_encoder -> connector, all images as one batch.
 */
async function encodeImages(images: RgbImage[]): Promise<EncodedImages> {
  const pp = init.imagePreprocessing;
  if (!pp || !backend) throw new Error('this worker has no vision graphs');
  const { height: H, width: W } = pp.size;
  let t0 = performance.now();
  const pixels = new Float32Array(images.length * 3 * H * W); // [B,3,H,W]
  images.forEach((image, i) => pixels.set(preprocessImage(image, pp).pixelValues.data, i * 3 * H * W));
  const preprocessSeconds = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const features = await backend.run('vision_encoder', { pixel_values: { type: 'float32', data: pixels, dims: [images.length, 3, H, W] } });
  const embeds = await backend.run('connector', { image_features: features.image_features });
  return { embeds: embeds.image_embeds, preprocessSeconds, visionSeconds: (performance.now() - t0) / 1000 };
}

async function handle(req: WorkerRequest): Promise<WorkerResult> {
  switch (req.op) {
    case 'run':
      if (!backend) throw new Error('the worker has no sessions');
      return backend.run(req.graph, req.feeds);
    case 'encode_images':
      return encodeImages(req.images);
    case 'allocate': {
      const cachedPositions = prefixCache().allocate(req.seqId, req.maxPositions, req.blockKeys);
      return { usage: decoder().cache.usage(), cachedPositions };
    }
    case 'free':
      prefix?.release(req.seqId, req.blockKeys);
      return backend?.decoder ? backend.decoder.cache.usage() : null;
    case 'step':
      return decoder().step(req.rows);
    case 'usage':
      return backend?.decoder ? backend.decoder.cache.usage() : null;
    case 'counters':
      return decoder().counters();
    case 'close':
      await backend?.release();
      return null;
  }
}

const loaded = load();
loaded.then(
  (hello) => port.postMessage(hello),
  (err: Error) => port.postMessage({ type: 'failed', error: { name: err.name, message: err.message } } satisfies WorkerHello),
);

// One request at a time, after loading: each waits for the previous one to settle.
let queue: Promise<void> = loaded.then(
  () => undefined,
  () => undefined,
);
port.on('message', (req: WorkerRequest) => {
  queue = queue.then(async () => {
    let response: WorkerResponse;
    try {
      response = { id: req.id, ok: true, result: await handle(req) };
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      response = { id: req.id, ok: false, error: { name: e.name, message: e.message } };
    }
    port.postMessage(response, response.ok ? transferables(response.result) : []);
  });
});
