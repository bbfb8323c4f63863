// A model worker thread: owns ONNX Runtime sessions (created once, kept for the worker's life,
// because session.run blocks its thread and sessions leak when recreated) and, when it runs the
// decoder, the KV cache. Requests are handled one at a time, in arrival order, so that cache
// updates and decoder steps never interleave.

import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { preprocessImage, type RgbImage } from '../model/index.js';
import { JsKvCache, type KvCache } from './kv-cache.js';
import { appendPresents, buildDecoderFeeds, type StepRow, type TensorData } from './batch-step.js';
import {
  transferables,
  type EncodedImages,
  type GraphName,
  type SessionSettings,
  type StepResult,
  type StepRowRequest,
  type WorkerHello,
  type WorkerInit,
  type WorkerRequest,
  type WorkerResponse,
  type WorkerResult,
} from './worker-protocol.js';
import { checkGraphIo } from './graph-io.js';

const port = parentPort;
if (!port) throw new Error('worker.ts must run in a worker thread');
const init = workerData as WorkerInit;

const sessions: Partial<Record<GraphName, InferenceSession>> = {};
let cache: KvCache | null = null;

function sessionOptions(s: SessionSettings): InferenceSession.SessionOptions {
  return {
    executionProviders: s.executionProvider === 'cuda' ? [{ name: 'cuda', deviceId: s.deviceId }] : ['cpu'],
    intraOpNumThreads: s.intraOpNumThreads > 0 ? s.intraOpNumThreads : undefined,
    interOpNumThreads: 1,
    graphOptimizationLevel: s.graphOptimizationLevel,
    extra: { session: { intra_op: { allow_spinning: s.allowSpinning ? '1' : '0' } } },
  };
}

async function load(): Promise<WorkerHello> {
  const io: NonNullable<Extract<WorkerHello, { type: 'ready' }>['io']> = {};
  for (const [graph, path] of Object.entries(init.graphs) as [GraphName, string][]) {
    let session: InferenceSession;
    try {
      session = await InferenceSession.create(path, sessionOptions(init.session));
    } catch (err) {
      throw new Error(`cannot load ${graph} graph ${path}: ${(err as Error).message}`, { cause: err });
    }
    checkGraphIo(graph, path, session.inputNames, session.outputNames, init.decoder?.numLayers ?? 0);
    sessions[graph] = session;
    io[graph] = { inputs: [...session.inputNames], outputs: [...session.outputNames] };
  }
  if (init.decoder) {
    const d = init.decoder;
    cache = new JsKvCache({ numLayers: d.numLayers, numKvHeads: d.numKvHeads, headDim: d.headDim }, d.kvCacheBytes);
  }
  return { type: 'ready', io };
}

async function run(graph: GraphName, feeds: Record<string, TensorData>): Promise<Record<string, TensorData>> {
  const session = sessions[graph];
  if (!session) throw new Error(`this worker has no ${graph} session`);
  const inputs: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) inputs[name] = new Tensor(t.type, t.data, t.dims);
  const outputs = await session.run(inputs);
  const result: Record<string, TensorData> = {};
  for (const [name, t] of Object.entries(outputs)) {
    result[name] = { type: t.type as TensorData['type'], data: t.data as TensorData['data'], dims: [...t.dims] };
  }
  return result;
}

/**
 * Decoded RGB images -> resize + normalise (the model layer's PIL-exact preprocessing, CPU-heavy,
 * hence here and not on the main thread) -> vision_encoder -> connector, all images as one batch.
 */
async function encodeImages(images: RgbImage[]): Promise<EncodedImages> {
  const pp = init.imagePreprocessing;
  if (!pp) throw new Error('this worker has no vision graphs');
  const { height: H, width: W } = pp.size;
  let t0 = performance.now();
  const pixels = new Float32Array(images.length * 3 * H * W); // [B,3,H,W]
  images.forEach((image, i) => pixels.set(preprocessImage(image, pp).pixelValues.data, i * 3 * H * W));
  const preprocessSeconds = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const features = await run('vision_encoder', { pixel_values: { type: 'float32', data: pixels, dims: [images.length, 3, H, W] } });
  const embeds = await run('connector', { image_features: features.image_features });
  return { embeds: embeds.image_embeds, preprocessSeconds, visionSeconds: (performance.now() - t0) / 1000 };
}

/** Embeds the rows that brought token ids, in one embed_tokens call over all their ids. */
async function embedRows(rows: StepRowRequest[], hiddenSize: number): Promise<StepRow[]> {
  const idRows = rows.filter((r) => !r.embeds);
  const total = idRows.reduce((n, r) => n + (r.ids?.length ?? 0), 0);
  let table: Float32Array | null = null;
  if (total > 0) {
    const ids = new BigInt64Array(total);
    let at = 0;
    for (const r of idRows) for (const id of r.ids ?? []) ids[at++] = BigInt(id);
    const out = await run('embed_tokens', { input_ids: { type: 'int64', data: ids, dims: [1, total] } });
    table = out.inputs_embeds.data as Float32Array; // [1,total,D]
  }
  let at = 0;
  return rows.map((r) => {
    if (r.embeds) return { seqId: r.seqId, embeds: r.embeds, count: r.embeds.length / hiddenSize };
    const count = r.ids?.length ?? 0;
    const embeds = table!.subarray(at * hiddenSize, (at + count) * hiddenSize);
    at += count;
    return { seqId: r.seqId, embeds, count };
  });
}

async function step(rows: StepRowRequest[]): Promise<StepResult> {
  if (!cache || !init.decoder) throw new Error('this worker has no decoder');
  const { hiddenSize, vocabSize } = init.decoder;
  const stepRows = await embedRows(rows, hiddenSize);
  const batch = buildDecoderFeeds(stepRows, cache, hiddenSize);
  const outputs = await run('decoder', batch.feeds);
  appendPresents(stepRows, outputs, batch, cache);
  const logits = outputs.logits;
  if (logits.dims.length !== 2 || logits.dims[0] !== rows.length || logits.dims[1] !== vocabSize) {
    throw new Error(`decoder logits have shape [${logits.dims}], expected [${rows.length},${vocabSize}]`);
  }
  return { logits: logits.data as Float32Array, vocabSize, usage: cache.usage() };
}

async function handle(req: WorkerRequest): Promise<WorkerResult> {
  switch (req.op) {
    case 'run':
      return run(req.graph, req.feeds);
    case 'encode_images':
      return encodeImages(req.images);
    case 'allocate':
      cache!.allocate(req.seqId, req.maxPositions);
      return cache!.usage();
    case 'free':
      cache?.free(req.seqId);
      return cache ? cache.usage() : null;
    case 'step':
      return step(req.rows);
    case 'usage':
      return cache ? cache.usage() : null;
    case 'close':
      await Promise.all(Object.values(sessions).map((s) => s.release()));
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
