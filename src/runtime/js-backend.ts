// The `js` backend: onnxruntime-node sessions, and the KV cache in the worker's heap
// (JsKvCache). Every run copies its outputs into fresh JS arrays (the binding does so), which
// is why a decode step returns only the new positions' keys and values and the cache appends
// them to blocks laid out as the decoder's past input (kv-cache.ts).

import { InferenceSession, Tensor } from 'onnxruntime-node';
import { JsKvCache } from './kv-cache.js';
import { appendPresents, buildDecoderFeeds, type StepRow, type TensorData } from './batch-step.js';
import type { DecoderBackend, LoadedGraphs, RuntimeBackend } from './backend.js';
import { checkGraphIo, isSharedKvDecoder } from './graph-io.js';
import type { DecoderSettings, GraphName, SessionSettings, StepCounters, StepResult, StepRowRequest, WorkerInit } from './worker-protocol.js';

function sessionOptions(s: SessionSettings): InferenceSession.SessionOptions {
  return {
    executionProviders: s.executionProvider === 'cuda' ? [{ name: 'cuda', deviceId: s.deviceId }] : ['cpu'],
    intraOpNumThreads: s.intraOpNumThreads > 0 ? s.intraOpNumThreads : undefined,
    interOpNumThreads: 1,
    graphOptimizationLevel: s.graphOptimizationLevel,
    extra: { session: { intra_op: { allow_spinning: s.allowSpinning ? '1' : '0' } } },
  };
}

export async function loadJsBackend(init: WorkerInit): Promise<RuntimeBackend> {
  const sessions: Partial<Record<GraphName, InferenceSession>> = {};
  const graphs: LoadedGraphs = {};
  try {
    for (const [graph, path] of Object.entries(init.graphs) as [GraphName, string][]) {
      let session: InferenceSession;
      try {
        session = await InferenceSession.create(path, sessionOptions(init.session));
      } catch (err) {
        throw new Error(`cannot load ${graph} graph ${path}: ${(err as Error).message}`, { cause: err });
      }
      sessions[graph] = session;
      if (graph === 'decoder' && isSharedKvDecoder(session.inputNames)) {
        throw new Error(
          `${path}: this decoder is of the shared_kv form (GroupQueryAttention over one past/present buffer), ` +
            'which only the native runtime reads; run with --runtime native',
        );
      }
      checkGraphIo(graph, path, session.inputNames, session.outputNames, init.decoder?.numLayers ?? 0);
      graphs[graph] = { inputs: [...session.inputNames], outputs: [...session.outputNames] };
    }
  } catch (err) {
    await Promise.all(Object.values(sessions).map((s) => s.release()));
    throw err;
  }

  async function run(graph: GraphName, feeds: Record<string, TensorData>): Promise<Record<string, TensorData>> {
    const session = sessions[graph];
    if (!session) throw new Error(`this worker has no ${graph} session`);
    const inputs: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) inputs[name] = new Tensor(t.type, t.data, t.dims);
    const outputs = await session.run(inputs);
    const result: Record<string, TensorData> = {};
    for (const [name, t] of Object.entries(outputs)) {
      result[name] = { type: t.type as TensorData['type'], data: t.data as TensorData['data'], dims: [...t.dims] };
    }
    return result;
  }

  return {
    graphs,
    run,
    decoder: init.decoder ? jsDecoder(init.decoder, run) : null,
    release: async () => void (await Promise.all(Object.values(sessions).map((s) => s.release()))),
  };
}

type Run = RuntimeBackend['run'];

function jsDecoder(d: DecoderSettings, run: Run): DecoderBackend {
  const cache = new JsKvCache({ numLayers: d.numLayers, numKvHeads: d.numKvHeads, headDim: d.headDim }, d.kvCacheBytes);
  const counters: StepCounters = { steps: 0, decoderRuns: 0, bytesToJs: 0, bytesFromJs: 0, hostToDeviceBytes: 0, deviceToHostBytes: 0 };
  // Every output of a run is copied into JS by the binding: the embeddings, the logits and the presents.
  const counted: Run = async (graph, feeds) => {
    const outputs = await run(graph, feeds);
    for (const t of Object.values(outputs)) counters.bytesToJs += t.data.byteLength;
    return outputs;
  };
  return {
    cache,
    counters: () => ({ ...counters }),
    async step(rows: StepRowRequest[]): Promise<StepResult> {
      for (const r of rows) counters.bytesFromJs += (r.embeds ?? r.ids)?.byteLength ?? 0;
      const stepRows = await embedRows(rows, d.hiddenSize, counted);
      const batch = buildDecoderFeeds(stepRows, cache, d.hiddenSize);
      const outputs = await counted('decoder', batch.feeds);
      counters.steps++;
      counters.decoderRuns++;
      appendPresents(stepRows, outputs, batch, cache);
      const logits = outputs.logits;
      if (logits.dims.length !== 2 || logits.dims[0] !== rows.length || logits.dims[1] !== d.vocabSize) {
        throw new Error(`decoder logits have shape [${logits.dims}], expected [${rows.length},${d.vocabSize}]`);
      }
      return { logits: logits.data as Float32Array, vocabSize: d.vocabSize, usage: cache.usage() };
    },
  };
}

/** Embeds the rows that brought token ids, in one embed_tokens call over all their ids. */
async function embedRows(rows: StepRowRequest[], hiddenSize: number, run: Run): Promise<StepRow[]> {
  const idRows = rows.filter((r) => !r.embeds);
  const total = idRows.reduce((n, r) => n + (r.ids?.length ?? 0), 0);
  let table: Float32Array | null = null;
  if (total > 0) {
    const ids = new BigInt64Array(total);
    let at = 0;
    for (const r of idRows) for (const id of r.ids ?? []) ids[at++] = BigInt(id);
    const out = await run('embed_tokens', { input_ids: { type: 'int64', data: ids, dims: [1, total] } });
    table = out.inputs_embeds.data as Float32Array; // [1,total,D]
  }
  let at = 0;
  return rows.map((r) => {
    if (r.embeds) return { seqId: r.seqId, embeds: r.embeds, count: r.embeds.length / hiddenSize };
    const count = r.ids?.length ?? 0;
    const embeds = table!.subarray(at * hiddenSize, (at + count) * hiddenSize);
    at += count;
    return { seqId: r.seqId, embeds, count };
  });
}
