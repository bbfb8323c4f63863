// The one TS module over the Rust addon native/runtime (built by `npm ci` into
// native/build/tinyllava_runtime.node): its exports' types, and loading it, with the reason
// when it cannot load (no cargo at install time, a build for another platform, ...).

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvCacheFullError } from './kv-cache.js';
import type { DecoderSettings, StepCounters } from './worker-protocol.js';

export const NATIVE_ADDON_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '../../../native/build/tinyllava_runtime.node');

export interface NativeSessionOptions {
  intraOpThreads: number; // 0: ORT's default
  graphOptimizationLevel: 'disabled' | 'basic' | 'extended' | 'layout' | 'all';
  allowSpinning: boolean;
  executionProvider: 'cpu' | 'cuda';
  deviceId: number;
  /** CUDA: the libcudart the KV cache's device memory is managed with. */
  cudaRuntime?: string;
}

export interface NativeIoInfo {
  name: string;
  elementType: 'float32' | 'float16' | 'int64' | 'int32' | null;
  dims: number[];
}

export interface NativeHostTensor {
  name: string;
  elementType: string;
  dims: number[];
  data: Uint8Array;
}

export interface NativeSession {
  /** cpu, or cuda:<device> */
  readonly device: string;
  readonly inputs: NativeIoInfo[];
  readonly outputs: NativeIoInfo[];
  run(feeds: NativeHostTensor[]): NativeHostTensor[];
}

export interface NativeUsage {
  usedBytes: number;
  reservedBytes: number;
  capacityBytes: number;
  sequences: number;
  storedBytes: number;
  storedBlocks: number;
}

export interface NativeStepRow {
  seqId: number;
  ids?: Int32Array;
  embeds?: Float32Array;
}

export interface NativeDecoder {
  readonly form: 'standard' | 'shared_kv';
  readonly kvElementType: 'float32' | 'float16';
  readonly bytesPerPosition: number;
  allocate(seqId: number, maxPositions: number): void;
  has(seqId: number): boolean;
  length(seqId: number): number;
  free(seqId: number): void;
  usage(): NativeUsage;
  saveBlock(seqId: number, start: number, count: number): number;
  loadBlock(seqId: number, handle: number): void;
  dropBlock(handle: number): void;
  /** Writes [B, V] logits, request order, into `logits`. */
  step(rows: NativeStepRow[], logits: Float32Array): void;
  counters(): StepCounters;
}

export interface NativeAddon {
  init(library: string, preload: string[]): string;
  preloadLibrary(path: string): void;
  cudaDriverVersion(): number;
  NativeSession: new (path: string, options: NativeSessionOptions) => NativeSession;
  NativeDecoder: new (decoder: NativeSession, embedTokens: NativeSession, settings: DecoderSettings) => NativeDecoder;
}

let loaded: { addon: NativeAddon } | { error: string } | null = null;

/** The addon, or why it cannot be used; loaded once per thread. */
export function loadNativeAddon(): { addon: NativeAddon } | { error: string } {
  if (loaded) return loaded;
  if (!existsSync(NATIVE_ADDON_PATH)) {
    loaded = { error: `the native addon ${NATIVE_ADDON_PATH} was not built (install Rust's cargo, then run npm run build:native)` };
  } else {
    try {
      loaded = { addon: createRequire(import.meta.url)(NATIVE_ADDON_PATH) as NativeAddon };
    } catch (err) {
      loaded = { error: `the native addon ${NATIVE_ADDON_PATH} cannot be loaded: ${(err as Error).message}` };
    }
  }
  return loaded;
}

export function requireNativeAddon(): NativeAddon {
  const r = loadNativeAddon();
  if ('error' in r) throw new Error(r.error);
  return r.addon;
}

/**
 * Runs an addon call, turning its "KV cache full" failures (status QueueFull, which the addon
 * reserves for them) into KvCacheFullError, as the js backend throws.
 */
export function nativeCall<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code === 'QueueFull') throw new KvCacheFullError(e.message);
    throw err;
  }
}
