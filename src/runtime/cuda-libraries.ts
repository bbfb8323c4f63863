// The CUDA execution provider of the native runtime, as `npm run setup:cuda` installs it from
// PyPI (tools/setup-cuda.sh, docs/gpu.md): the onnxruntime-gpu wheel's core library and CUDA
// provider (same ORT version as onnxruntime-node), and NVIDIA's CUDA 13 wheels. Nothing sets
// LD_LIBRARY_PATH for us, and a running process cannot change its own, so the server preloads
// the CUDA libraries by absolute path before the provider loads: a library already loaded
// satisfies a later dependency on its soname (what onnxruntime's Python package does in
// preload_dlls). Anything missing is named: the file, the pip package it comes from, the driver.

import { readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { NativeAddon } from './native-addon.js';
import type { NativeInit } from './worker-protocol.js';

/** CUDA 13.0, the version onnxruntime-gpu 1.30 is built for: NVIDIA driver R580 or newer. */
export const CUDA_DRIVER_MIN = 13000;

interface Needed {
  file: string;
  pkg: string;
}

/** The CUDA libraries the provider needs, in dependency order (dependencies first). */
export const CUDA_LIBRARIES: readonly Needed[] = [
  { file: 'libcudart.so.13', pkg: 'nvidia-cuda-runtime' },
  { file: 'libcublasLt.so.13', pkg: 'nvidia-cublas' },
  { file: 'libcublas.so.13', pkg: 'nvidia-cublas' },
  { file: 'libnvJitLink.so.13', pkg: 'nvidia-nvjitlink' },
  { file: 'libnvrtc.so.13', pkg: 'nvidia-cuda-nvrtc' },
  { file: 'libcurand.so.10', pkg: 'nvidia-curand' },
  { file: 'libcufft.so.12', pkg: 'nvidia-cufft' },
  { file: 'libcudnn.so.9', pkg: 'nvidia-cudnn-cu13' },
  { file: 'libcudnn_graph.so.9', pkg: 'nvidia-cudnn-cu13' },
  { file: 'libcudnn_engines_precompiled.so.9', pkg: 'nvidia-cudnn-cu13' },
  { file: 'libcudnn_engines_runtime_compiled.so.9', pkg: 'nvidia-cudnn-cu13' },
  { file: 'libcudnn_heuristic.so.9', pkg: 'nvidia-cudnn-cu13' },
  { file: 'libcudnn_ops.so.9', pkg: 'nvidia-cudnn-cu13' },
  { file: 'libcudnn_cnn.so.9', pkg: 'nvidia-cudnn-cu13' },
  { file: 'libcudnn_adv.so.9', pkg: 'nvidia-cudnn-cu13' },
];

/** The onnxruntime-gpu wheel's files: the core (loaded instead of onnxruntime-node's) and the providers next to it. */
export function ortGpuLibraries(ortVersion: string): readonly Needed[] {
  const pkg = `onnxruntime-gpu==${ortVersion}`;
  return [
    { file: `libonnxruntime.so.${ortVersion}`, pkg },
    { file: 'libonnxruntime_providers_shared.so', pkg },
    { file: 'libonnxruntime_providers_cuda.so', pkg },
  ];
}

/** Every regular file under `dir` by name (first found wins); empty when `dir` does not exist. */
function filesUnder(dir: string): Map<string, string> {
  const found = new Map<string, string>();
  let entries: string[];
  try {
    entries = readdirSync(dir, { recursive: true, encoding: 'utf8' });
  } catch {
    return found;
  }
  for (const rel of entries) {
    const name = basename(rel);
    if (!name.startsWith('lib') || found.has(name)) continue;
    const path = join(dir, rel);
    try {
      if (statSync(path).isFile()) found.set(name, path);
    } catch {
      // a dangling link: treated as missing
    }
  }
  return found;
}

export class CudaSetupError extends Error {
  override readonly name = 'CudaSetupError';
}

function driverProblem(addon: NativeAddon): string | null {
  let version: number;
  try {
    version = addon.cudaDriverVersion();
  } catch (err) {
    return `${(err as Error).message}; the CUDA provider needs the NVIDIA driver, R580 or newer (CUDA 13.0); in a container, run it with the NVIDIA container toolkit (e.g. --gpus all)`;
  }
  if (version >= CUDA_DRIVER_MIN) return null;
  const v = (n: number): string => `${Math.floor(n / 1000)}.${(n % 1000) / 10}`;
  return `the NVIDIA driver supports CUDA ${v(version)}, the CUDA provider needs CUDA ${v(CUDA_DRIVER_MIN)}: install driver R580 or newer`;
}

/** dlopens the libraries in order; one that fails is retried after the others (an unknown dependency order). */
function preloadAll(addon: NativeAddon, paths: readonly string[]): string[] {
  let pending = [...paths];
  let errors: string[] = [];
  for (let pass = 0; pass < 3 && pending.length > 0; pass++) {
    const failed: string[] = [];
    errors = [];
    for (const path of pending) {
      try {
        addon.preloadLibrary(path);
      } catch (err) {
        failed.push(path);
        errors.push((err as Error).message);
      }
    }
    if (failed.length === pending.length) break; // no progress
    pending = failed;
  }
  return pending.length === 0 ? [] : errors;
}

/**
 * Finds the CUDA provider under `cudaDir`, checks the driver, and preloads the CUDA libraries;
 * returns what the native workers load. Throws CudaSetupError saying everything that is missing.
 */
export function prepareNativeCuda(addon: NativeAddon, cudaDir: string, ortVersion: string): NativeInit {
  const files = filesUnder(cudaDir);
  const needed = [...ortGpuLibraries(ortVersion), ...CUDA_LIBRARIES];
  const missing = needed.filter((n) => !files.has(n.file));
  const problems: string[] = [];
  if (missing.length > 0) {
    const list = missing.map((n) => `${n.file} (pip package ${n.pkg})`).join(', ');
    problems.push(`missing in ${cudaDir}: ${list}; run npm run setup:cuda (or set CUDA_DIR to the folder it filled)`);
  }
  const driver = driverProblem(addon);
  if (driver) problems.push(driver);
  if (problems.length === 0) {
    const failures = preloadAll(addon, CUDA_LIBRARIES.map((n) => files.get(n.file)!));
    if (failures.length > 0) problems.push(`cannot load the CUDA libraries: ${failures.join('; ')}`);
  }
  if (problems.length > 0) throw new CudaSetupError(`the CUDA execution provider cannot start: ${problems.join('; ')}`);
  return { library: files.get(`libonnxruntime.so.${ortVersion}`)!, preload: [], cudaRuntime: files.get('libcudart.so.13')! };
}
