// Which runtime and provider run, and why when it is not the configured one: the native runtime
// falls back to js when its addon is missing or cannot load (with the reason), never silently.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { onnxruntimeNodeLibrary } from '../../src/runtime/execution-provider.js';
import { resolveRuntime } from '../../src/runtime/runtime-choice.js';

const cpu = { executionProvider: 'cpu' as const, cudaFallbackToCpu: false };

test('native with its addon: native on CPU loads the ONNX Runtime core onnxruntime-node ships', () => {
  const c = resolveRuntime({ runtime: 'native', ...cpu });
  assert.equal(c.runtime, 'native');
  assert.equal(c.runtimeFallbackReason, null);
  assert.deepEqual(c.native, { library: onnxruntimeNodeLibrary(), preload: [], cudaRuntime: null });
});

test('native without its addon: js, with the reason', () => {
  const why = 'the native addon /x/tinyllava_runtime.node was not built (install Rust\'s cargo, then run npm run build:native)';
  const c = resolveRuntime({ runtime: 'native', ...cpu }, () => ({ error: why }));
  assert.equal(c.runtime, 'js');
  assert.equal(c.runtimeFallbackReason, why);
  assert.equal(c.native, undefined);
  assert.equal(c.provider, 'cpu');
});

test('js when asked for: no reason to report', () => {
  const c = resolveRuntime({ runtime: 'js', ...cpu }, () => assert.fail('the addon is not looked at'));
  assert.deepEqual([c.runtime, c.runtimeFallbackReason, c.native], ['js', null, undefined]);
});
