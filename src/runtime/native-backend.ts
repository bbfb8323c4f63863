// The `native` backend: sessions in the Rust addon (native/runtime, over the ONNX Runtime C API),
// and the KV cache in native memory (CPU) or device memory (CUDA). A decoder step sends token
// ids (or ready embeddings) in and gets only the logits rows back: embed_tokens, the past and
// present tensors and the cache updates all stay native, bound with IO binding.
//
// It reads both decoder forms (docs/model-package.md): `standard` (past fed in place from the
// cache's blocks, presents appended) and `shared_kv` (GroupQueryAttention over one buffer that
// is both past and present); the form is read from the decoder's input names.

import type { TensorData } from './batch-step.js';
import type { DecoderBackend, LoadedGraphs, RuntimeBackend } from './backend.js';
import { checkGraphIo, isSharedKvDecoder } from './graph-io.js';
import { nativeCall, requireNativeAddon, type NativeAddon, type NativeHostTensor, type NativeSession, type NativeSessionOptions } from './native-addon.js';
import { NativeKvCache } from './native-kv-cache.js';
import type { DecoderSettings, GraphName, SessionSettings, StepResult, StepRowRequest, WorkerInit } from './worker-protocol.js';

function sessionOptions(s: SessionSettings, cudaRuntime: string | null): NativeSessionOptions {
  return {
    intraOpThreads: s.intraOpNumThreads,
    graphOptimizationLevel: s.graphOptimizationLevel,
    allowSpinning: s.allowSpinning,
    executionProvider: s.executionProvider,
    deviceId: s.deviceId,
    ...(s.executionProvider === 'cuda' && cudaRuntime ? { cudaRuntime } : {}),
  };
}

export async function loadNativeBackend(init: WorkerInit): Promise<RuntimeBackend> {
  if (!init.native) throw new Error('the native runtime needs to know which ONNX Runtime library to load');
  const addon = requireNativeAddon();
  addon.init(init.native.library, init.native.preload);
  const options = sessionOptions(init.session, init.native.cudaRuntime);
  const sessions: Partial<Record<GraphName, NativeSession>> = {};
  const graphs: LoadedGraphs = {};
  for (const [graph, path] of Object.entries(init.graphs) as [GraphName, string][]) {
    let session: NativeSession;
    try {
      session = new addon.NativeSession(path, options);
    } catch (err) {
      throw new Error(`cannot load ${graph} graph ${path}: ${(err as Error).message}`, { cause: err });
    }
    const inputs = session.inputs.map((i) => i.name);
    const outputs = session.outputs.map((o) => o.name);
    // A shared_kv decoder's IO is checked by the addon, which knows that form.
    if (graph !== 'decoder' || !isSharedKvDecoder(inputs)) checkGraphIo(graph, path, inputs, outputs, init.decoder?.numLayers ?? 0);
    sessions[graph] = session;
    graphs[graph] = { inputs, outputs };
  }

  async function run(graph: GraphName, feeds: Record<string, TensorData>): Promise<Record<string, TensorData>> {
    const session = sessions[graph];
    if (!session) throw new Error(`this worker has no ${graph} session`);
    const outputs = session.run(Object.entries(feeds).map(([name, t]) => toHost(name, t)));
    return Object.fromEntries(outputs.map((o) => [o.name, fromHost(o)]));
  }

  return {
    graphs,
    run,
    decoder: init.decoder ? nativeDecoder(addon, init.decoder, sessions) : null,
    // Sessions and the cache are freed with their JS objects (the worker exits after close).
    release: async () => undefined,
  };
}

function nativeDecoder(addon: NativeAddon, d: DecoderSettings, sessions: Partial<Record<GraphName, NativeSession>>): DecoderBackend {
  if (!sessions.decoder || !sessions.embed_tokens) throw new Error('the decoder needs the decoder and embed_tokens graphs');
  const decoder = new addon.NativeDecoder(sessions.decoder, sessions.embed_tokens, d);
  const cache = new NativeKvCache(decoder, { numLayers: d.numLayers, numKvHeads: d.numKvHeads, headDim: d.headDim });
  return {
    cache,
    async step(rows: StepRowRequest[]): Promise<StepResult> {
      const logits = new Float32Array(rows.length * d.vocabSize); // [B, V], written natively
      nativeCall(() => decoder.step(rows.map((r) => ({ seqId: r.seqId, ids: r.embeds ? undefined : r.ids, embeds: r.embeds })), logits));
      return { logits, vocabSize: d.vocabSize, usage: cache.usage() };
    },
    counters: () => decoder.counters(),
  };
}

function toHost(name: string, t: TensorData): NativeHostTensor {
  return { name, elementType: t.type, dims: t.dims, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
}

function fromHost(t: NativeHostTensor): TensorData {
  const { buffer, byteOffset, byteLength } = t.data;
  switch (t.elementType) {
    case 'float32':
      return { type: 'float32', data: new Float32Array(buffer, byteOffset, byteLength / 4), dims: t.dims };
    case 'int64':
      return { type: 'int64', data: new BigInt64Array(buffer, byteOffset, byteLength / 8), dims: t.dims };
    default:
      throw new Error(`output ${t.name} has type ${t.elementType}, which the runtime does not pass on`);
  }
}
