// Resolves the configured execution provider of the js runtime before any worker starts.
// onnxruntime-node ships only the CPU provider; CUDA needs libonnxruntime_providers_cuda.so next
// to the binding, and a missing library makes session creation throw an opaque error. So check
// the file here and either fail with a message that says what to install, or fall back to CPU
// when configured to. (The native runtime's CUDA provider comes from npm run setup:cuda
// instead: cuda-libraries.ts.)

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export type ExecutionProvider = 'cpu' | 'cuda';

export interface ProviderChoice {
  provider: ExecutionProvider;
  /** Set when CUDA was asked for and CPU is used instead. */
  fallbackReason: string | null;
}

function onnxruntimeNodePackage(): string {
  return createRequire(import.meta.url).resolve('onnxruntime-node/package.json');
}

/** The folder of onnxruntime-node's binding and its libonnxruntime.so.1. */
export function onnxruntimeNodeLibDir(): string {
  const arch = process.arch === 'arm64' ? 'arm64' : 'x64';
  return join(dirname(onnxruntimeNodePackage()), 'bin', 'napi-v6', process.platform, arch);
}

/** The ONNX Runtime core onnxruntime-node ships (the native runtime loads the same file on CPU). */
export function onnxruntimeNodeLibrary(): string {
  return join(onnxruntimeNodeLibDir(), 'libonnxruntime.so.1');
}

/** onnxruntime-node's version, which the onnxruntime-gpu wheel of setup:cuda matches. */
export function onnxruntimeVersion(): string {
  return (JSON.parse(readFileSync(onnxruntimeNodePackage(), 'utf8')) as { version: string }).version;
}

export function cudaProviderLibrary(): string {
  return join(onnxruntimeNodeLibDir(), 'libonnxruntime_providers_cuda.so');
}

export function resolveExecutionProvider(wanted: ExecutionProvider, fallbackToCpu: boolean): ProviderChoice {
  if (wanted === 'cpu') return { provider: 'cpu', fallbackReason: null };
  const lib = cudaProviderLibrary();
  if (existsSync(lib)) return { provider: 'cuda', fallbackReason: null };
  const why =
    `the CUDA execution provider needs ${lib}, which is missing: install onnxruntime-node ` +
    `without ONNXRUNTIME_NODE_INSTALL=skip on a machine that can reach NuGet, or copy the GPU ` +
    `provider libraries (libonnxruntime_providers_{shared,cuda}.so) there (or use --runtime native with npm run setup:cuda)`;
  if (fallbackToCpu) return { provider: 'cpu', fallbackReason: why };
  throw new Error(why);
}
