// The one message protocol between the main thread (model-runner.ts) and a model worker
// (worker.ts). Typed arrays travel as transferables: moved, not copied.

import type { ImagePreprocessing, RgbImage } from '../model/index.js';
import type { KvCacheUsage } from './kv-cache.js';
import type { PrefixCacheOptions } from './prefix-cache.js';
import type { TensorData } from './batch-step.js';

export type GraphName = 'vision_encoder' | 'connector' | 'embed_tokens' | 'decoder';

export interface SessionSettings {
  executionProvider: 'cpu' | 'cuda';
  deviceId: number;
  intraOpNumThreads: number; // 0: ORT's default (one per core)
  /** false when several workers share the cores: idle ORT threads then sleep instead of spinning. */
  allowSpinning: boolean;
  graphOptimizationLevel: 'disabled' | 'basic' | 'extended' | 'all';
}

/** What the text worker needs to run decoder steps and own the KV cache. */
export interface DecoderSettings {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  hiddenSize: number;
  vocabSize: number;
  kvCacheBytes: number;
}

/**
 * Which library runs the graphs (backend.ts): `native` is the Rust addon over the ONNX Runtime C
 * API with the KV cache in native or device memory (native-backend.ts), `js` is onnxruntime-node
 * with the KV cache in JS memory (js-backend.ts).
 */
export type RuntimeKind = 'js' | 'native';

/** Which ONNX Runtime core library the native runtime loads, and what it preloads first (CUDA). */
export interface NativeInit {
  /** Absolute path of libonnxruntime.so.1 (onnxruntime-node's, or the onnxruntime-gpu wheel's). */
  library: string;
  /** Libraries to dlopen first, in dependency order (the CUDA libraries the provider needs). */
  preload: string[];
  /** CUDA: the libcudart the KV cache's device memory is managed with. */
  cudaRuntime: string | null;
}

export interface WorkerInit {
  runtime: RuntimeKind;
  /** Present when runtime is native. */
  native?: NativeInit;
  /** Absolute paths of the graphs this worker loads. */
  graphs: Partial<Record<GraphName, string>>;
  session: SessionSettings;
  /** Present when the worker loads the decoder (it then also needs embed_tokens). */
  decoder?: DecoderSettings;
  /** The prefix cache beside the decoder's KV cache (prefix-cache.ts); absent: off. */
  prefixCache?: PrefixCacheOptions;
  /** Present when the worker loads the vision graphs: it resizes and normalises images itself. */
  imagePreprocessing?: ImagePreprocessing;
}

/** One row of a decoder step: new token ids (embedded in the worker) or ready embeddings. */
export interface StepRowRequest {
  seqId: number;
  ids?: Int32Array;
  /** [count, D]; when present, `count` positions of ready embeddings (prefill with images). */
  embeds?: Float32Array;
}

export type WorkerRequest =
  | { id: number; op: 'run'; graph: GraphName; feeds: Record<string, TensorData> }
  | { id: number; op: 'encode_images'; images: RgbImage[] }
  // blockKeys: the prefix cache's keys of the blocks to look up (allocate) or to store (free).
  | { id: number; op: 'allocate'; seqId: number; maxPositions: number; blockKeys?: string[] }
  | { id: number; op: 'free'; seqId: number; blockKeys?: string[] }
  | { id: number; op: 'step'; rows: StepRowRequest[] }
  | { id: number; op: 'usage' }
  | { id: number; op: 'counters' }
  | { id: number; op: 'close' };

export interface AllocateResult {
  usage: KvCacheUsage;
  /** Prompt positions loaded from the prefix cache (0 when it is off or had nothing). */
  cachedPositions: number;
}

export interface StepResult {
  /** [B, V] the last real position's logits of each row, in request order. */
  logits: Float32Array;
  vocabSize: number;
  usage: KvCacheUsage;
}

/** What the decoder's steps moved so far: into JS, out of JS, and between host and device. */
export interface StepCounters {
  steps: number;
  decoderRuns: number;
  /** Bytes the runtime wrote into JS memory (native: the logits rows; js: every output the binding copied). */
  bytesToJs: number;
  /** Token ids and embeddings read from JS. */
  bytesFromJs: number;
  /** Bytes of bound tensors copied host -> device and device -> host (0 on the CPU). */
  hostToDeviceBytes: number;
  deviceToHostBytes: number;
}

export interface EncodedImages {
  /** [B, N, D] connector outputs, one row per image in request order. */
  embeds: TensorData;
  /** Seconds spent resizing/normalising and in vision_encoder + connector. */
  preprocessSeconds: number;
  visionSeconds: number;
}

export type WorkerResult = Record<string, TensorData> | StepResult | EncodedImages | AllocateResult | KvCacheUsage | StepCounters | null;

export interface WorkerErrorInfo {
  name: string;
  message: string;
}

export type WorkerResponse =
  | { id: number; ok: true; result: WorkerResult }
  | { id: number; ok: false; error: WorkerErrorInfo };

/** Sent once after init: the loaded graphs' I/O names, or why loading failed. */
export type WorkerHello =
  | { type: 'ready'; io: Partial<Record<GraphName, { inputs: string[]; outputs: string[] }>> }
  | { type: 'failed'; error: WorkerErrorInfo };

/**
 * The buffers of typed arrays found in a message, for postMessage's transfer list. Only views
 * that span their whole buffer: moving a buffer that other views share (a Buffer pool slab, a
 * larger array a chunk was cut from) would detach them too, so those are copied instead.
 */
export function transferables(value: unknown, out: Set<ArrayBuffer> = new Set()): ArrayBuffer[] {
  if (ArrayBuffer.isView(value)) {
    const whole = value.byteOffset === 0 && value.byteLength === value.buffer.byteLength;
    if (value.buffer instanceof ArrayBuffer && whole) out.add(value.buffer);
  } else if (Array.isArray(value)) {
    for (const v of value) transferables(v, out);
  } else if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) transferables(v, out);
  }
  return [...out];
}
