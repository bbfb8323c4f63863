// The main thread's handle on the model: a promise-based API over the worker protocol.
//
// Two workers by default, so that encoding an image (seconds on a CPU for a SigLIP-so400m) does
// not stall the decode steps of running sequences:
//   text worker:   embed_tokens + decoder + the KV cache
//   vision worker: vision_encoder + connector
// Arrays passed in are transferred to the worker: the caller must not use them afterwards.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ImagePreprocessing, RgbImage } from '../model/index.js';
import { KvCacheFullError, type KvCacheUsage } from './kv-cache.js';
import type { TensorData } from './batch-step.js';
import type { ExecutionProvider } from './execution-provider.js';
import { resolveRuntime, type RuntimeChoice } from './runtime-choice.js';
import { PREFIX_BLOCK_POSITIONS } from './prefix-cache.js';
import {
  transferables,
  type AllocateResult,
  type DecoderSettings,
  type EncodedImages,
  type GraphName,
  type RuntimeKind,
  type SessionSettings,
  type StepCounters,
  type StepResult,
  type StepRowRequest,
  type WorkerHello,
  type WorkerInit,
  type WorkerRequest,
  type WorkerResponse,
  type WorkerResult,
} from './worker-protocol.js';

export type { AllocateResult, EncodedImages, StepResult, StepRowRequest } from './worker-protocol.js';

export interface RunnerOptions {
  /** Absolute paths of the four graphs. */
  graphs: Record<GraphName, string>;
  decoder: Omit<DecoderSettings, 'kvCacheBytes'>;
  kvCacheBytes: number;
  /** Prefix cache capacity in bytes, within kvCacheBytes (default 0: off); see prefix-cache.ts. */
  prefixCacheBytes?: number;
  /** Positions per prefix-cache block (default PREFIX_BLOCK_POSITIONS). */
  prefixBlockPositions?: number;
  /** The package's image_preprocessing: the vision worker applies it. */
  imagePreprocessing: ImagePreprocessing;
  /**
   * Which library runs the graphs (default native: the addon over the ONNX Runtime C API with
   * the KV cache in native or device memory; js when the addon is missing, with the reason).
   */
  runtime?: RuntimeKind;
  executionProvider?: ExecutionProvider; // default cpu
  /** When CUDA is asked for but its provider library is missing: run on CPU instead of failing. */
  cudaFallbackToCpu?: boolean;
  /** Where npm run setup:cuda put the CUDA provider (native runtime; default .cuda/ in the project). */
  cudaDir?: string;
  deviceId?: number;
  /**
   * ORT intra-op threads per worker; default: all cores for both. Idle workers' threads sleep
   * (no spinning), so the vision encoder gets every core while no decoding runs, and shares
   * them with the decoder otherwise. Measured on 2 cores, Qwen2-0.5B+SigLIP, distinct images:
   * time to first token at concurrency 1 went from 10.2 s to 6.7 s against half the cores, and
   * at concurrency 4 the inter-token latency p95 stayed the same (0.21 s -> 0.20 s).
   */
  intraOpNumThreads?: number;
  visionIntraOpNumThreads?: number;
  /** Run vision_encoder + connector in their own worker (default true). */
  separateVisionWorker?: boolean;
  graphOptimizationLevel?: SessionSettings['graphOptimizationLevel'];
}

/** A failure reported by a worker, with the worker-side error's name. */
export class RuntimeError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

class WorkerClient {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (r: WorkerResult) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private broken: Error | null = null;
  readonly ready: Promise<Extract<WorkerHello, { type: 'ready' }>>;

  constructor(init: WorkerInit, label: string) {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init, name: label });
    this.ready = new Promise((resolve, reject) => {
      const onHello = (msg: WorkerHello | WorkerResponse): void => {
        if (!('type' in msg)) return;
        this.worker.off('message', onHello);
        if (msg.type === 'ready') resolve(msg);
        else reject(new RuntimeError(msg.error.name, msg.error.message));
      };
      this.worker.on('message', onHello);
      this.worker.once('error', reject);
      this.worker.once('exit', (code) => reject(new RuntimeError('WorkerExited', `${label} worker exited with code ${code} while loading`)));
    });
    this.worker.on('message', (msg: WorkerHello | WorkerResponse) => {
      if ('type' in msg) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(reviveError(msg.error.name, msg.error.message));
    });
    // A crashed worker fails everything in flight and every later call.
    const fail = (err: Error): void => {
      this.broken ??= new RuntimeError('WorkerExited', `${label} worker stopped: ${err.message}`);
      for (const p of this.pending.values()) p.reject(this.broken);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
  }

  call(req: DistributiveOmit<WorkerRequest, 'id'>): Promise<WorkerResult> {
    if (this.broken) return Promise.reject(this.broken);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      try {
        this.worker.postMessage({ ...req, id }, transferables(req));
      } catch (err) {
        this.pending.delete(id); // e.g. a value that cannot be cloned
        reject(err as Error);
      }
    });
  }

  async close(): Promise<void> {
    if (!this.broken) await this.call({ op: 'close' }).catch(() => undefined);
    this.broken ??= new RuntimeError('WorkerClosed', 'the model runner is closed');
    await this.worker.terminate();
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function reviveError(name: string, message: string): Error {
  return name === 'KvCacheFullError' ? new KvCacheFullError(message) : new RuntimeError(name, message);
}

export class ModelRunner {
  readonly executionProvider: ExecutionProvider;
  /** Why CUDA was not used although configured, or null. */
  readonly fallbackReason: string | null;
  readonly runtime: RuntimeKind;
  /** Why the native runtime was not used although configured, or null. */
  readonly runtimeFallbackReason: string | null;
  private readonly text: WorkerClient;
  private readonly vision: WorkerClient;

  private constructor(text: WorkerClient, vision: WorkerClient, choice: RuntimeChoice) {
    this.text = text;
    this.vision = vision;
    this.executionProvider = choice.provider;
    this.fallbackReason = choice.providerFallbackReason;
    this.runtime = choice.runtime;
    this.runtimeFallbackReason = choice.runtimeFallbackReason;
  }

  /** Starts the workers and loads every session; rejects with a message naming the failing file. */
  static async start(o: RunnerOptions): Promise<ModelRunner> {
    const choice = resolveRuntime({
      runtime: o.runtime ?? 'native',
      executionProvider: o.executionProvider ?? 'cpu',
      cudaFallbackToCpu: o.cudaFallbackToCpu ?? false,
      cudaDir: o.cudaDir,
    });
    const separate = o.separateVisionWorker ?? true;
    const { runtime, native } = choice;
    const cores = availableParallelism();
    const session = (threads: number): SessionSettings => ({
      executionProvider: choice.provider,
      deviceId: o.deviceId ?? 0,
      intraOpNumThreads: threads,
      allowSpinning: !separate, // spinning threads of one idle worker would steal the other's cores
      graphOptimizationLevel: o.graphOptimizationLevel ?? 'all',
    });
    const decoder: DecoderSettings = { ...o.decoder, kvCacheBytes: o.kvCacheBytes };
    const prefixCache = { capacityBytes: o.prefixCacheBytes ?? 0, blockPositions: o.prefixBlockPositions ?? PREFIX_BLOCK_POSITIONS };
    const textGraphs = { embed_tokens: o.graphs.embed_tokens, decoder: o.graphs.decoder };
    const visionGraphs = { vision_encoder: o.graphs.vision_encoder, connector: o.graphs.connector };
    const textThreads = o.intraOpNumThreads ?? cores;
    const text = new WorkerClient(
      separate
        ? { runtime, native, graphs: textGraphs, session: session(textThreads), decoder, prefixCache }
        : {
            runtime,
            native,
            graphs: { ...textGraphs, ...visionGraphs },
            session: session(textThreads),
            decoder,
            prefixCache,
            imagePreprocessing: o.imagePreprocessing,
          },
      'text',
    );
    const vision = separate
      ? new WorkerClient(
          {
            runtime,
            native,
            graphs: visionGraphs,
            session: session(o.visionIntraOpNumThreads ?? cores),
            imagePreprocessing: o.imagePreprocessing,
          },
          'vision',
        )
      : text;
    const results = await Promise.allSettled([text.ready, vision.ready]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all([text.close(), separate ? vision.close() : undefined]);
      throw failed.reason;
    }
    return new ModelRunner(text, vision, choice);
  }

  /**
   * Decoded images -> [B,N,D] embeddings, ready to splice: preprocessing, vision_encoder and
   * connector all run in the vision worker. The images' buffers are transferred.
   */
  async encodeImages(images: RgbImage[]): Promise<EncodedImages> {
    return (await this.vision.call({ op: 'encode_images', images })) as EncodedImages;
  }

  /** embed_tokens: ids [T] -> [T,D]. */
  async embedTokens(ids: readonly number[]): Promise<Float32Array> {
    const data = BigInt64Array.from(ids, (id) => BigInt(id));
    const out = (await this.text.call({
      op: 'run',
      graph: 'embed_tokens',
      feeds: { input_ids: { type: 'int64', data, dims: [1, ids.length] } },
    })) as Record<string, TensorData>;
    return out.inputs_embeds.data as Float32Array;
  }

  /**
   * Reserves KV room for a sequence and loads the longest prefix of `blockKeys` the prefix cache
   * holds (stored blocks give way to the reservation first); rejects with KvCacheFullError when
   * the reservation does not fit.
   */
  async allocate(seqId: number, maxPositions: number, blockKeys?: string[]): Promise<AllocateResult> {
    return (await this.text.call({ op: 'allocate', seqId, maxPositions, blockKeys })) as AllocateResult;
  }

  /** Stores the sequence's blocks of `blockKeys` in the prefix cache (when on), then frees it. */
  async free(seqId: number, blockKeys?: string[]): Promise<KvCacheUsage> {
    return (await this.text.call({ op: 'free', seqId, blockKeys })) as KvCacheUsage;
  }

  /** One batched decoder step over the given rows; see batch-step.ts for the layout. */
  async step(rows: StepRowRequest[]): Promise<StepResult> {
    return (await this.text.call({ op: 'step', rows })) as StepResult;
  }

  /** What the decoder's steps moved into and out of JS so far (and between host and device). */
  async counters(): Promise<StepCounters> {
    return (await this.text.call({ op: 'counters' })) as StepCounters;
  }

  async usage(): Promise<KvCacheUsage> {
    return (await this.text.call({ op: 'usage' })) as KvCacheUsage;
  }

  async close(): Promise<void> {
    await Promise.all([this.text.close(), this.vision === this.text ? undefined : this.vision.close()]);
  }
}
