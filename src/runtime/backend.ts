// The seam between a model worker (worker.ts) and the library that runs the graphs. A worker
// holds one RuntimeBackend: the `native` backend over the ONNX Runtime C API that keeps the KV
// cache in native or device memory (native-backend.ts), or the `js` backend (onnxruntime-node
// sessions, the KV cache in the worker's heap: js-backend.ts). The worker protocol, the model runner and everything
// above them are the same for every backend.

import type { KvCache } from './kv-cache.js';
import type { TensorData } from './batch-step.js';
import type { GraphName, StepCounters, StepResult, StepRowRequest, WorkerInit } from './worker-protocol.js';

/** The graphs one worker loaded, with the input and output names each one has. */
export type LoadedGraphs = Partial<Record<GraphName, { inputs: string[]; outputs: string[] }>>;

/** The decoder side of a backend: the KV cache and batched steps over it. */
export interface DecoderBackend {
  /** The KV cache the steps read and extend (allocation, freeing and usage go through it). */
  readonly cache: KvCache;
  /** One batched decoder step over the given rows (see batch-step.ts for the batch layout). */
  step(rows: StepRowRequest[]): Promise<StepResult>;
  /** What the steps so far moved into and out of JS (and between host and device). */
  counters(): StepCounters;
}

export interface RuntimeBackend {
  readonly graphs: LoadedGraphs;
  /** Runs one loaded graph on host tensors and returns host tensors. */
  run(graph: GraphName, feeds: Record<string, TensorData>): Promise<Record<string, TensorData>>;
  /** Present when the worker loaded the decoder. */
  readonly decoder: DecoderBackend | null;
  release(): Promise<void>;
}

/** Loads a backend's sessions for a worker; rejects with a message naming the failing file. */
export type BackendLoader = (init: WorkerInit) => Promise<RuntimeBackend>;
