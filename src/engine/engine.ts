// createEngine: the Engine of src/engine/types.ts over a model package.
//
// generate() checks admission, prepares the prompt (tokens, images -> embeddings, from the image
// cache or the batched vision encoder) on the caller's time, then hands the sequence to the one
// scheduler loop and streams its events (docs/scheduling.md). Sessions load in the
// background: the engine exists (and the HTTP layer can answer /health) before they are ready.

import { totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import { ModelRunner, type RunnerOptions } from '../runtime/model-runner.js';
import { PREFIX_BLOCK_POSITIONS } from '../runtime/prefix-cache.js';
import type { KvCacheUsage } from '../runtime/kv-cache.js';
import type { RuntimeKind } from '../runtime/worker-protocol.js';
import { EngineError, toEngineError } from './errors.js';
import { Grammars, type GrammarConstraint } from './grammar.js';
import { ImageEmbedder } from './image-embedder.js';
import { imageKeyNamespace } from './image-key.js';
import { loadModelPort } from './model-adapter.js';
import type { ModelPort } from './model-port.js';
import { preparePrompt } from './prepare.js';
import { Scheduler } from './scheduler.js';
import { Sequence } from './sequence.js';
import { IMAGE_MARKER } from './model-port.js';
import {
  IMAGE_POSITION_ID,
  type Engine,
  type EngineStats,
  type GenerationEvent,
  type GenerationRequest,
  type ModelInfo,
  type TokenizeInput,
  type TokenizeResult,
} from './types.js';

export interface EngineOptions {
  /** The served model name (default: the package's name). */
  modelId?: string;
  /** Which runtime runs the graphs (default native; js when the native addon is unavailable). */
  runtime?: RuntimeKind;
  executionProvider?: 'cpu' | 'cuda';
  cudaFallbackToCpu?: boolean;
  /** Where npm run setup:cuda put the CUDA provider (native runtime). */
  cudaDir?: string;
  deviceId?: number;
  intraOpNumThreads?: number;
  visionIntraOpNumThreads?: number;
  separateVisionWorker?: boolean;
  /** KV cache capacity (default: enough for maxBatchSize full contexts, at most a quarter of RAM). */
  kvCacheBytes?: number;
  maxBatchSize?: number; // default 8
  maxWaiting?: number; // default 64
  prefillChunkTokens?: number; // default 512
  maxImagesPerRequest?: number; // default 4
  /** Image embedding cache capacity in bytes (default 256 MiB); 0 turns it off. */
  imageCacheBytes?: number;
  /**
   * Prefix cache capacity in bytes of KV, within kvCacheBytes (default: half of it); 0 turns it
   * off. Its blocks give way to admission whenever a reservation needs their room.
   */
  prefixCacheBytes?: number;
  /** Most images per vision-encoder call, across requests (default 8). */
  maxImageBatch?: number;
  /** Largest input image, width x height, refused before decoding (default 40 megapixels). */
  maxImagePixels?: number;
  /** Run one tiny step through every graph before ready() resolves (default true). */
  warmup?: boolean;
  /** Compiled structured-output grammars kept, least recently used dropped first (default 64). */
  grammarCacheSize?: number;
}

/** The contract's EngineStats plus the scheduler's step counters. */
export interface LoadedEngineStats extends EngineStats {
  kvCache: KvCacheUsage | null;
  /** Decoder calls so far and the rows they carried. */
  steps: Scheduler['counters'];
  /** Vision-encoder calls so far and the images they carried (cache hits never get here). */
  imageEncoder: { calls: number; images: number };
}

export interface LoadedEngine extends Engine {
  stats(): LoadedEngineStats;
  /** How the sessions run, once ready (e.g. 'cpu', or 'cpu (CUDA unavailable: ...)'). */
  readonly executionProvider: string | null;
  /** Which runtime runs the graphs once ready, and why it is not the configured one (or null). */
  readonly runtime: { kind: RuntimeKind; fallbackReason: string | null } | null;
}

export async function createEngine(packageDir: string, options: EngineOptions = {}): Promise<LoadedEngine> {
  return createEngineFromPort(await loadModelPort(packageDir, { maxImagePixels: options.maxImagePixels ?? 40_000_000 }), options);
}

const DEFAULT_IMAGE_CACHE_BYTES = 256 * 2 ** 20;

interface Loaded {
  runner: ModelRunner;
  scheduler: Scheduler;
  images: ImageEmbedder;
}

/** An engine over an already loaded model (tests substitute parts of the model this way). */
export function createEngineFromPort(model: ModelPort, options: EngineOptions = {}): LoadedEngine {
  return new VlmEngine(model, options);
}

class VlmEngine implements LoadedEngine {
  readonly model: ModelInfo;
  private readonly port: ModelPort;
  private readonly options: EngineOptions;
  private readonly loading: Promise<Loaded>;
  private readonly grammars: Grammars;
  private loaded: Loaded | null = null;
  private prefixOn = false;
  private closing = false;
  private nextSeqId = 1;
  /** Requests past the admission check whose prompt is being prepared: they count as waiting. */
  private preparing = 0;
  executionProvider: string | null = null;
  runtime: LoadedEngine['runtime'] = null;

  constructor(port: ModelPort, options: EngineOptions) {
    this.port = port;
    this.options = options;
    this.model = { id: options.modelId ?? port.name, maxContext: port.maxContext, numImageTokens: port.numImageTokens };
    this.grammars = new Grammars(
      { tokenizerPath: port.tokenizerPath, logitRows: port.text.vocabSize, stopTokenIds: port.stopTokenIds },
      options.grammarCacheSize,
    );
    this.loading = this.load();
    this.loading.catch(() => undefined); // reported by ready() and generate()
  }

  private async load(): Promise<Loaded> {
    const o = this.options;
    const t = this.port.text;
    const maxBatchSize = o.maxBatchSize ?? 8;
    const bytesPerPosition = 2 * t.numLayers * t.numKvHeads * t.headDim * 4;
    const kvCacheBytes =
      o.kvCacheBytes ??
      Math.max(this.port.maxContext * bytesPerPosition, Math.min(maxBatchSize * this.port.maxContext * bytesPerPosition, totalmem() / 4));
    // Less than one block is no cache at all: off, so that nothing is hashed or counted.
    const prefixCacheBytes = o.prefixCacheBytes ?? Math.floor(kvCacheBytes / 2);
    const prefixOn = prefixCacheBytes >= PREFIX_BLOCK_POSITIONS * bytesPerPosition;
    const runnerOptions: RunnerOptions = {
      graphs: this.port.graphs,
      decoder: t,
      kvCacheBytes,
      prefixCacheBytes: prefixOn ? prefixCacheBytes : 0,
      prefixBlockPositions: PREFIX_BLOCK_POSITIONS,
      imagePreprocessing: this.port.imagePreprocessing,
      runtime: o.runtime,
      executionProvider: o.executionProvider,
      cudaFallbackToCpu: o.cudaFallbackToCpu,
      cudaDir: o.cudaDir,
      deviceId: o.deviceId,
      intraOpNumThreads: o.intraOpNumThreads,
      visionIntraOpNumThreads: o.visionIntraOpNumThreads,
      separateVisionWorker: o.separateVisionWorker,
    };
    this.prefixOn = prefixOn;
    let runner: ModelRunner;
    try {
      runner = await ModelRunner.start(runnerOptions);
    } catch (err) {
      throw new EngineError('model_error', (err as Error).message, { cause: err });
    }
    this.grammars.preload(); // the token trie builds off the event loop while warm-up runs
    this.executionProvider = runner.fallbackReason ? `cpu (CUDA unavailable: ${runner.fallbackReason})` : runner.executionProvider;
    this.runtime = { kind: runner.runtime, fallbackReason: runner.runtimeFallbackReason };
    if (o.warmup ?? true) {
      try {
        await this.warmup(runner);
      } catch (err) {
        await runner.close();
        throw new EngineError('model_error', `warm-up failed: ${(err as Error).message}`, { cause: err });
      }
    }
    const scheduler = new Scheduler(runner, {
      maxBatchSize,
      maxWaiting: o.maxWaiting ?? 64,
      prefillChunkTokens: o.prefillChunkTokens ?? 512,
      prefixBlockPositions: prefixOn ? PREFIX_BLOCK_POSITIONS : null,
    });
    const images = new ImageEmbedder(runner, {
      cacheBytes: o.imageCacheBytes ?? DEFAULT_IMAGE_CACHE_BYTES,
      maxBatchImages: o.maxImageBatch ?? 8,
      namespace: imageKeyNamespace({
        visionEncoder: this.port.graphs.vision_encoder,
        connector: this.port.graphs.connector,
        preprocessing: this.port.imagePreprocessing,
      }),
      keyImages: prefixOn,
    });
    this.loaded = { runner, scheduler, images };
    return this.loaded;
  }

  /** One pass through every graph, so that the first request does not pay ORT's first-run costs. */
  private async warmup(runner: ModelRunner): Promise<void> {
    const gray = { width: 64, height: 48, data: new Uint8Array(64 * 48 * 3).fill(128) };
    const image = await runner.encodeImages([gray]);
    const seqId = 0; // request ids start at 1
    await runner.allocate(seqId, 2);
    try {
      await runner.step([{ seqId, embeds: (image.embeds.data as Float32Array).slice(0, this.port.text.hiddenSize) }]);
      await runner.step([{ seqId, ids: Int32Array.of(0) }]);
    } finally {
      await runner.free(seqId);
    }
  }

  async ready(): Promise<void> {
    await this.loading;
  }

  stats(): LoadedEngineStats {
    const s = this.loaded?.scheduler;
    const images = this.loaded?.images;
    const stats: LoadedEngineStats = {
      running: s?.numRunning ?? 0,
      waiting: s?.numWaiting ?? 0,
      kvCache: s?.kvCacheUsage ?? null,
      steps: { ...(s?.counters ?? { prefillSteps: 0, prefillRows: 0, decodeSteps: 0, decodeRows: 0 }) },
      imageEncoder: images?.encoderCounters ?? { calls: 0, images: 0 },
    };
    const cache = images?.cacheStats();
    if (cache) stats.imageCache = cache;
    if (this.prefixOn && s) stats.prefixCache = { ...s.prefixCounters, bytes: s.kvCacheUsage?.storedBytes ?? 0 };
    return stats;
  }

  async *generate(request: GenerationRequest, signal?: AbortSignal): AsyncIterable<GenerationEvent> {
    const arrival = performance.now();
    if (this.closing) throw new EngineError('shutting_down', 'the engine is shutting down');
    if (request.maxTokens !== null && !(Number.isInteger(request.maxTokens) && request.maxTokens >= 1)) {
      throw new EngineError('invalid_request', `max_tokens must be a positive integer, got ${request.maxTokens}`, { param: 'max_tokens' });
    }
    const { runner, scheduler, images } = await this.loading;
    signal?.throwIfAborted();
    // Refuse before the prompt's images are decoded and encoded, not after: under a flood the
    // refused requests must cost nothing, and the vision encoder serves the admitted ones.
    if (!scheduler.hasRoom(this.preparing)) {
      throw new EngineError('overloaded', `too many requests waiting (${this.options.maxWaiting ?? 64}); retry later`);
    }

    let seq: Sequence;
    this.preparing++;
    try {
      // A schema that does not compile is refused before any image is decoded.
      let constraint: GrammarConstraint | null = null;
      if (request.constraint) constraint = await this.grammars.constraint(request.constraint, { allowStop: !request.ignoreEos });
      signal?.throwIfAborted();
      const prompt = await preparePrompt(
        request.messages,
        this.port,
        { embedTokens: (ids) => runner.embedTokens(ids), embedImages: (decoded) => images.embedImages(decoded) },
        { maxImages: this.options.maxImagesPerRequest ?? 4 },
        signal,
      );
      if (request.maxTokens !== null && prompt.length + request.maxTokens > this.port.maxContext) {
        throw new EngineError(
          'context_length_exceeded',
          `prompt (${prompt.length} tokens) + max_tokens (${request.maxTokens}) = ${prompt.length + request.maxTokens} ` +
            `exceeds the model's context of ${this.port.maxContext}`,
          { param: 'max_tokens' },
        );
      }
      seq = new Sequence(this.nextSeqId++, request, prompt, this.port, arrival, constraint);
    } catch (err) {
      if (signal?.aborted) throw new EngineError('cancelled', 'the request was cancelled', { cause: err });
      throw toEngineError(err);
    } finally {
      this.preparing--;
    }

    // Cancellation and deadline mark the sequence; the scheduler finishes it before its next step.
    const stop = (reason: 'cancelled' | 'deadline'): void => {
      seq.stopRequested ??= reason;
      scheduler.notify();
    };
    const onAbort = (): void => stop('cancelled');
    signal?.addEventListener('abort', onAbort, { once: true });
    const deadline =
      request.deadlineMs === null ? null : setTimeout(() => stop('deadline'), Math.max(0, request.deadlineMs - Date.now()));
    try {
      scheduler.submit(seq);
      yield* seq.events;
    } finally {
      // Also runs when the caller stops iterating early: that cancels the sequence.
      signal?.removeEventListener('abort', onAbort);
      if (deadline) clearTimeout(deadline);
      if (seq.state !== 'finished') stop('cancelled');
    }
  }

  async tokenize(input: TokenizeInput): Promise<TokenizeResult> {
    const port = this.port;
    try {
      if (input.type === 'text') {
        const ids = await port.encodeText(input.text, input.addSpecialTokens, { maxPositions: port.maxContext });
        return { ids, strings: port.tokenStrings(ids) };
      }
      const { ids: marked } = await port.encodeMessages(input.messages, {
        maxPositions: port.maxContext,
        generationPrompt: input.addGenerationPrompt,
      });
      const texts = port.tokenStrings(marked.filter((id) => id !== IMAGE_MARKER));
      const ids: number[] = [];
      const strings: string[] = [];
      let t = 0;
      for (const id of marked) {
        if (id !== IMAGE_MARKER) {
          ids.push(id);
          strings.push(texts[t++]);
        } else {
          for (let k = 0; k < port.numImageTokens; k++) {
            ids.push(IMAGE_POSITION_ID);
            strings.push(port.imagePlaceholder);
          }
        }
      }
      return { ids, strings };
    } catch (err) {
      throw toEngineError(err);
    }
  }

  async detokenize(ids: number[]): Promise<string> {
    if (ids.length > this.port.maxContext) {
      throw new EngineError('context_length_exceeded', `${ids.length} tokens are more than the model's context of ${this.port.maxContext}`, {
        param: 'tokens',
      });
    }
    try {
      return await this.port.decode(ids);
    } catch (err) {
      throw toEngineError(err);
    }
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const loaded = await this.loading.catch(() => null);
    if (!loaded) return;
    await loaded.scheduler.close();
    await loaded.runner.close();
  }
}
