// Decides, on the main thread before any worker starts, which runtime and execution provider
// run the graphs, and why when it is not what was configured: the native runtime falls back to
// js when its addon is missing (no cargo at install time) or cannot load; CUDA falls back to
// CPU only when CUDA_FALLBACK_TO_CPU allows it, and otherwise fails with what is missing.

import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareNativeCuda } from './cuda-libraries.js';
import { onnxruntimeNodeLibrary, onnxruntimeVersion, resolveExecutionProvider, type ExecutionProvider } from './execution-provider.js';
import { loadNativeAddon } from './native-addon.js';
import type { NativeInit, RuntimeKind } from './worker-protocol.js';

/** Where npm run setup:cuda installs the CUDA provider by default. */
export const DEFAULT_CUDA_DIR = resolve(fileURLToPath(import.meta.url), '../../../../.cuda');

export interface RuntimeChoice {
  runtime: RuntimeKind;
  /** Why the native runtime was asked for and js runs instead, or null. */
  runtimeFallbackReason: string | null;
  provider: ExecutionProvider;
  /** Why CUDA was asked for and CPU runs instead, or null. */
  providerFallbackReason: string | null;
  /** What native workers load (runtime native only). */
  native?: NativeInit;
}

export interface RuntimeWish {
  runtime: RuntimeKind;
  executionProvider: ExecutionProvider;
  cudaFallbackToCpu: boolean;
  cudaDir?: string;
}

export function resolveRuntime(w: RuntimeWish, loadAddon: typeof loadNativeAddon = loadNativeAddon): RuntimeChoice {
  if (w.runtime === 'native') {
    const loaded = loadAddon();
    if ('addon' in loaded) {
      const cpu: NativeInit = { library: onnxruntimeNodeLibrary(), preload: [], cudaRuntime: null };
      if (w.executionProvider === 'cpu') return { runtime: 'native', runtimeFallbackReason: null, provider: 'cpu', providerFallbackReason: null, native: cpu };
      try {
        const native = prepareNativeCuda(loaded.addon, w.cudaDir ?? DEFAULT_CUDA_DIR, onnxruntimeVersion());
        return { runtime: 'native', runtimeFallbackReason: null, provider: 'cuda', providerFallbackReason: null, native };
      } catch (err) {
        if (!w.cudaFallbackToCpu) throw err;
        return { runtime: 'native', runtimeFallbackReason: null, provider: 'cpu', providerFallbackReason: (err as Error).message, native: cpu };
      }
    }
    const js = resolveExecutionProvider(w.executionProvider, w.cudaFallbackToCpu);
    return { runtime: 'js', runtimeFallbackReason: loaded.error, provider: js.provider, providerFallbackReason: js.fallbackReason };
  }
  const js = resolveExecutionProvider(w.executionProvider, w.cudaFallbackToCpu);
  return { runtime: 'js', runtimeFallbackReason: null, provider: js.provider, providerFallbackReason: js.fallbackReason };
}
