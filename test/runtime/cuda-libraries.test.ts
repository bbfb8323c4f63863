// --execution-provider cuda on the native runtime says exactly what is missing: each library file
// with the pip package it comes from, and the NVIDIA driver (libcuda.so.1, R580+), instead of an
// opaque error. Checked with empty and fake CUDA folders (no GPU or driver needed).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CUDA_LIBRARIES, CudaSetupError, ortGpuLibraries, prepareNativeCuda } from '../../src/runtime/cuda-libraries.js';
import { onnxruntimeVersion } from '../../src/runtime/execution-provider.js';
import { ModelRunner } from '../../src/runtime/model-runner.js';
import { requireNativeAddon } from '../../src/runtime/native-addon.js';
import { goldenPackages, goldenPort, runnerOptions } from '../support/golden.js';

const addon = requireNativeAddon();
const version = onnxruntimeVersion();
const driver = ((): number | null => {
  try {
    return addon.cudaDriverVersion();
  } catch {
    return null;
  }
})();

describe('CUDA provider diagnostics (native runtime)', () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'cuda-dir-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A CUDA folder laid out as setup:cuda lays it out, with empty stand-ins for the libraries. */
  function fakeCudaDir(name: string, leaveOut: string[] = []): string {
    const dir = join(root, name);
    const ort = join(dir, 'onnxruntime-gpu/onnxruntime/capi');
    const nv = join(dir, 'nvidia/nvidia/cu13/lib');
    mkdirSync(ort, { recursive: true });
    mkdirSync(nv, { recursive: true });
    for (const n of ortGpuLibraries(version)) if (!leaveOut.includes(n.file)) writeFileSync(join(ort, n.file), '');
    for (const n of CUDA_LIBRARIES) if (!leaveOut.includes(n.file)) writeFileSync(join(nv, n.file), '');
    return dir;
  }

  test('nothing installed: every file is named with its pip package, and what to run', () => {
    const dir = join(root, 'absent');
    assert.throws(
      () => prepareNativeCuda(addon, dir, version),
      (err: Error) => {
        assert.ok(err instanceof CudaSetupError);
        assert.match(err.message, /npm run setup:cuda/);
        assert.ok(err.message.includes(dir));
        for (const n of [...ortGpuLibraries(version), ...CUDA_LIBRARIES]) assert.ok(err.message.includes(`${n.file} (pip package ${n.pkg})`), n.file);
        if (driver === null) assert.match(err.message, /libcuda\.so\.1 \(the NVIDIA driver\) cannot be loaded.*R580 or newer/);
        return true;
      },
    );
  });

  test('one library missing: only that one is named', () => {
    const dir = fakeCudaDir('one-missing', ['libcublasLt.so.13']);
    assert.throws(
      () => prepareNativeCuda(addon, dir, version),
      (err: Error) => {
        assert.match(err.message, /missing in .*: libcublasLt\.so\.13 \(pip package nvidia-cublas\);/);
        assert.ok(!err.message.includes('libcudart.so.13 (pip'));
        return true;
      },
    );
  });

  test('every file there: the driver (or a library that does not load) is what is reported', () => {
    const dir = fakeCudaDir('complete');
    assert.throws(
      () => prepareNativeCuda(addon, dir, version),
      (err: Error) => {
        assert.ok(!err.message.includes('missing in'), err.message);
        if (driver === null) assert.match(err.message, /libcuda\.so\.1/);
        else assert.match(err.message, /cannot load the CUDA libraries: cannot load .*libcudart\.so\.13/); // empty stand-ins
        return true;
      },
    );
  });

  const name = goldenPackages()[0];
  test('the server fails with that message, or runs on CPU when CUDA_FALLBACK_TO_CPU allows', { skip: name ? false : 'no fixtures' }, async () => {
    const port = await goldenPort(name);
    const options = { ...runnerOptions(port, 'native'), executionProvider: 'cuda' as const, cudaDir: join(root, 'absent'), separateVisionWorker: false };
    await assert.rejects(ModelRunner.start(options), /the CUDA execution provider cannot start: missing in/);
    const runner = await ModelRunner.start({ ...options, cudaFallbackToCpu: true });
    try {
      assert.equal(runner.runtime, 'native');
      assert.equal(runner.executionProvider, 'cpu');
      assert.match(runner.fallbackReason ?? '', /libonnxruntime_providers_cuda\.so \(pip package onnxruntime-gpu==/);
    } finally {
      await runner.close();
    }
  });
});
