// Decode step time of one runtime backend, without the engine or HTTP: B sequences with a past of
// P positions each, then timed decode steps of all B rows together. On a tiny model this is the
// runtime's own per-step overhead; on a real one, its decode speed. Also counts what crossed into
// JS and between host and device per step (StepCounters), and runs greedy decoding from given
// prompt ids (gpu-check's comparison with the CPU golden). Used by serve-bench.ts (runtimes side
// by side) and gpu-check.ts.

import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { RuntimeBackend } from '../src/runtime/backend.js';
import { loadNativeBackend } from '../src/runtime/native-backend.js';
import { resolveRuntime, type RuntimeChoice } from '../src/runtime/runtime-choice.js';
import type { DecoderSettings, RuntimeKind, StepCounters, StepRowRequest, WorkerInit } from '../src/runtime/worker-protocol.js';
import { median, round } from './stats.js';

export interface DecoderGraphs {
  embedTokens: string;
  decoder: string;
  dims: Omit<DecoderSettings, 'kvCacheBytes'>;
}

/** The decoder graphs and dimensions of a model package. */
export function packageDecoder(dir: string): DecoderGraphs {
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  const t = m.text;
  return {
    embedTokens: join(dir, m.files.embed_tokens),
    decoder: join(dir, m.files.decoder),
    dims: {
      numLayers: t.num_layers,
      numKvHeads: t.num_key_value_heads,
      headDim: t.head_dim ?? t.hidden_size / t.num_attention_heads,
      hiddenSize: t.hidden_size,
      vocabSize: t.vocab_size,
    },
  };
}

export interface BackendWish {
  runtime: RuntimeKind;
  executionProvider: 'cpu' | 'cuda';
  cudaDir?: string;
  threads?: number;
  kvCacheBytes: number;
}

export interface LoadedDecoder {
  backend: RuntimeBackend;
  choice: RuntimeChoice;
  loadSeconds: number;
}

/** Loads one backend over the decoder graphs in this thread (no worker), as a worker would. */
export async function loadDecoder(g: DecoderGraphs, w: BackendWish): Promise<LoadedDecoder> {
  const choice = resolveRuntime({ runtime: w.runtime, executionProvider: w.executionProvider, cudaFallbackToCpu: false, cudaDir: w.cudaDir });
  if (choice.runtime !== w.runtime) throw new Error(`the ${w.runtime} runtime is unavailable: ${choice.runtimeFallbackReason}`);
  const init: WorkerInit = {
    runtime: choice.runtime,
    native: choice.native,
    graphs: { embed_tokens: g.embedTokens, decoder: g.decoder },
    session: { executionProvider: choice.provider, deviceId: 0, intraOpNumThreads: w.threads ?? availableParallelism(), allowSpinning: true, graphOptimizationLevel: 'all' },
    decoder: { ...g.dims, kvCacheBytes: w.kvCacheBytes },
  };
  const t0 = performance.now();
  // js on demand: a GPU machine running gpu-check has no onnxruntime-node binaries
  const backend = choice.runtime === 'js' ? await (await import('../src/runtime/js-backend.js')).loadJsBackend(init) : await loadNativeBackend(init);
  return { backend, choice, loadSeconds: round((performance.now() - t0) / 1000) };
}

export interface StepTiming {
  batch: number;
  past: number;
  /** Median milliseconds of one decode step of all rows. */
  stepMs: number;
  /** Tokens per second of all rows together (batch / step time). */
  tokensPerSecond: number;
  /** Per decode step, what crossed (differences of StepCounters over the timed steps). */
  perStep: Omit<StepCounters, 'steps' | 'decoderRuns'>;
  logitsBytes: number;
}

/** Prompt positions per prefill step, as the engine's default PREFILL_CHUNK_TOKENS. */
export const PREFILL_CHUNK = 512;

/** Token ids for the benchmark prompts: deterministic, spread over the vocabulary. */
function promptIds(n: number, seed: number, vocab: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % vocab);
}

/** B rows with `past` positions each, then `steps` timed decode steps of all of them. */
export async function timeDecodeSteps(
  backend: RuntimeBackend,
  batch: number,
  past: number,
  steps: number,
  vocab: number,
  prefillChunk = PREFILL_CHUNK,
): Promise<StepTiming> {
  const d = backend.decoder!;
  const ids = Array.from({ length: batch }, (_, b) => 1_000_000 + b);
  for (const id of ids) d.cache.allocate(id, past + steps + 3);
  try {
    for (const [b, id] of ids.entries()) {
      const prompt = promptIds(past, b + 1, vocab);
      for (let at = 0; at < past; at += prefillChunk) await d.step([{ seqId: id, ids: prompt.slice(at, at + prefillChunk) }]);
    }
    const token = (t: number): StepRowRequest[] => ids.map((seqId, b) => ({ seqId, ids: Int32Array.of((t * 31 + b) % vocab) }));
    for (let t = 0; t < 2; t++) await d.step(token(t)); // warm-up
    const before = d.counters();
    const times: number[] = [];
    for (let t = 0; t < steps; t++) {
      const t0 = performance.now();
      await d.step(token(t + 2));
      times.push(performance.now() - t0);
    }
    const after = d.counters();
    const per = (k: keyof StepCounters): number => round((after[k] - before[k]) / steps);
    const stepMs = median(times);
    return {
      batch,
      past,
      stepMs: round(stepMs),
      tokensPerSecond: round((batch * 1000) / stepMs),
      perStep: { bytesToJs: per('bytesToJs'), bytesFromJs: per('bytesFromJs'), hostToDeviceBytes: per('hostToDeviceBytes'), deviceToHostBytes: per('deviceToHostBytes') },
      logitsBytes: batch * vocab * 4,
    };
  } finally {
    for (const id of ids) d.cache.free(id);
  }
}

/** Greedy decoding of `count` tokens after a prompt given as ids, one sequence. */
export async function greedyFromIds(backend: RuntimeBackend, promptIdsList: readonly number[], count: number, vocab: number): Promise<number[]> {
  const d = backend.decoder!;
  const id = 2_000_000;
  d.cache.allocate(id, promptIdsList.length + count + 1);
  try {
    const argmax = (l: Float32Array): number => {
      let best = 0;
      for (let v = 1; v < vocab; v++) if (l[v] > l[best]) best = v;
      return best;
    };
    let { logits } = await d.step([{ seqId: id, ids: Int32Array.from(promptIdsList) }]);
    const out: number[] = [];
    for (let t = 0; t < count; t++) {
      out.push(argmax(logits));
      if (t < count - 1) ({ logits } = await d.step([{ seqId: id, ids: Int32Array.of(out[t]) }]));
    }
    return out;
  } finally {
    d.cache.free(id);
  }
}
