// `npm run bench -- --model DIR [...]`: the serving benchmark.
//
// 1. Starts the server (continuous batching as configured) and drives a concurrency sweep of
//    streaming chat requests, each with an image and a fixed output length (`ignore_eos`).
// 2. The same sweep against a server with batching disabled (MAX_BATCH_SIZE=1): the speed-up.
// 3. The engine alone, in-process, for one stream: the HTTP overhead.
// 4. With several runtimes (--runtime native,js, the default), the batched sweep, the engine
//    alone and the runtime's decode step time (decode-steps.ts) for each, reported as ratios.
// All of it runs in one invocation because these machines are noisy: ratios are only meaningful
// within one run. Writes <out>/<date>-<model>.json and .md.
// With --json-schema FILE, only the structured-outputs comparison runs instead (engine alone,
// with and without the schema, batch 1 and the largest concurrency: structured-bench.ts),
// written to <out>/<date>-<model>-structured.json and .md.
// With --multi-turn, only the prefix cache's comparison runs instead (multi-turn conversations,
// TTFT per turn with the cache on and off: multi-turn-bench.ts), written to
// <out>/<date>-<model>-multi-turn.json and .md.
// The sweeps above send the same prompt every time: the prefix cache is off for them
// (PREFIX_CACHE_SIZE=0), so that each request prefills its whole prompt as distinct ones would.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { createEngine } from '../src/engine/engine.js';
import type { GenerationRequest } from '../src/engine/types.js';
import type { RuntimeKind } from '../src/runtime/worker-protocol.js';
import { loadDecoder, packageDecoder, timeDecodeSteps, type StepTiming } from './decode-steps.js';
import { ServerProcess } from './server-process.js';
import { median, percentile, round, steadyDecodeRate } from './stats.js';
import { benchRequest } from './engine-request.js';
import { structuredComparison, structuredMarkdown, type StructuredOptions } from './structured-bench.js';
import { multiTurnComparison, multiTurnMarkdown, type MultiTurnOptions } from './multi-turn-bench.js';

const roundOrNull = (x: number | null): number | null => (x === null ? null : round(x));
import { streamChat, type StreamResult } from './stream-client.js';

interface Options {
  model: string;
  concurrency: number[];
  outputTokens: number;
  requestsPerStream: number;
  image: string;
  prompt: string;
  out: string;
  threads: string | undefined;
  unbatched: boolean;
  imageCache: boolean;
  quick: boolean;
  /** The first one is the main run (the unbatched sweep runs for it alone). */
  runtimes: RuntimeKind[];
  stepPast: number;
  jsonSchema: string | null;
  multiTurn: boolean;
  turns: number;
}

interface LevelResult {
  concurrency: number;
  requests: number;
  failed: number;
  wallSeconds: number;
  outputTokens: number;
  outputTokensPerSecond: number;
  requestsPerSecond: number;
  ttftP50: number;
  ttftP95: number;
  itlP50: number;
  itlP95: number;
  meanItl: number;
  /** Decode tokens/s while all streams decode together (first request of each stream); null if they never do. */
  steadyDecodeTokensPerSecond: number | null;
  serverRssBytes: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      concurrency: { type: 'string' },
      'output-tokens': { type: 'string' },
      'requests-per-stream': { type: 'string' },
      image: { type: 'string' },
      prompt: { type: 'string' },
      out: { type: 'string' },
      threads: { type: 'string' },
      'no-unbatched': { type: 'boolean' },
      'image-cache': { type: 'boolean' },
      quick: { type: 'boolean' },
      runtime: { type: 'string' },
      'step-past': { type: 'string' },
      'json-schema': { type: 'string' },
      'multi-turn': { type: 'boolean' },
      turns: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help || !values.model) {
    console.log(`usage: npm run bench -- --model DIR [--concurrency 1,2,4,8,16] [--output-tokens 64]
  [--requests-per-stream 2] [--image FILE] [--prompt TEXT] [--out bench/results] [--threads N]
  [--no-unbatched] [--image-cache] [--quick] [--runtime native,js] [--step-past 800]
  [--json-schema FILE] [--multi-turn [--turns 4]]`);
    process.exit(values.help ? 0 : 2);
  }
  const quick = Boolean(values.quick);
  const multiTurn = Boolean(values['multi-turn']);
  return {
    model: resolve(values.model),
    concurrency: (values.concurrency ?? (quick ? '1,2' : multiTurn ? '1,4' : '1,2,4,8,16')).split(',').map(Number),
    outputTokens: Number(values['output-tokens'] ?? (quick ? 8 : 64)),
    requestsPerStream: Number(values['requests-per-stream'] ?? (quick ? 1 : 2)),
    image: resolve(values.image ?? 'test/fixtures/images/photo-640x480.jpg'),
    prompt: values.prompt ?? 'Describe this picture in detail.',
    out: resolve(values.out ?? 'bench/results'),
    threads: values.threads,
    unbatched: !values['no-unbatched'],
    imageCache: Boolean(values['image-cache']),
    quick,
    runtimes: parseRuntimes(values.runtime ?? 'native,js'),
    stepPast: Number(values['step-past'] ?? (quick ? 64 : 800)),
    jsonSchema: values['json-schema'] ? resolve(values['json-schema']) : null,
    multiTurn,
    turns: Number(values.turns ?? 4),
  };
}

function parseRuntimes(raw: string): RuntimeKind[] {
  const list = raw.split(',').map((r) => r.trim());
  for (const r of list) if (r !== 'native' && r !== 'js') throw new Error(`--runtime: ${r} is not native or js`);
  if (list.length === 0 || new Set(list).size !== list.length) throw new Error(`--runtime: ${raw} must name each runtime once`);
  return list as RuntimeKind[];
}

function chatBody(o: Options, imageDataUrl: string) {
  return {
    messages: [
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: { url: imageDataUrl } },
          { type: 'text', text: o.prompt },
        ],
      },
    ],
    max_tokens: o.outputTokens,
    temperature: 0,
    ignore_eos: true,
  };
}

function summarise(concurrency: number, results: StreamResult[], firstRound: StreamResult[], wall: number, rss: number): LevelResult {
  const ok = results.filter((r) => r.ok);
  const tokens = ok.reduce((s, r) => s + r.tokens, 0);
  const itl = ok.flatMap((r) => r.itl);
  return {
    concurrency,
    requests: results.length,
    failed: results.length - ok.length,
    wallSeconds: round(wall),
    outputTokens: tokens,
    outputTokensPerSecond: round(tokens / wall),
    requestsPerSecond: round(ok.length / wall),
    ttftP50: round(percentile(ok.map((r) => r.ttft), 50)),
    ttftP95: round(percentile(ok.map((r) => r.ttft), 95)),
    itlP50: round(percentile(itl, 50)),
    itlP95: round(percentile(itl, 95)),
    meanItl: round(itl.reduce((s, x) => s + x, 0) / Math.max(1, itl.length)),
    steadyDecodeTokensPerSecond: roundOrNull(steadyDecodeRate(firstRound.filter((r) => r.ok).map((r) => r.tokenTimes))),
    serverRssBytes: rss,
  };
}

async function sweep(o: Options, env: Record<string, string>, label: string): Promise<LevelResult[]> {
  const server = await ServerProcess.start(o.model, env);
  const body = chatBody(o, imageDataUrl(o.image));
  const levels: LevelResult[] = [];
  try {
    await streamChat(server.baseUrl, body); // warm-up: first-call allocations, caches
    for (const c of o.concurrency) {
      server.startSampling();
      const t0 = performance.now();
      const perStream = await Promise.all(
        Array.from({ length: c }, async () => {
          const out: StreamResult[] = [];
          for (let i = 0; i < o.requestsPerStream; i++) out.push(await streamChat(server.baseUrl, body));
          return out;
        }),
      );
      const wall = (performance.now() - t0) / 1000;
      const level = summarise(c, perStream.flat(), perStream.map((rs) => rs[0]), wall, server.stopSampling());
      const failed = perStream.flat().find((r) => !r.ok);
      if (failed) console.error(`${label} c=${c}: ${level.failed} failed, e.g. ${failed.status} ${failed.error}`);
      console.error(`${label} c=${c}: ${level.outputTokensPerSecond} tok/s, TTFT p50 ${level.ttftP50}s, ITL p50 ${level.itlP50}s`);
      levels.push(level);
    }
  } finally {
    await server.stop();
  }
  return levels;
}

/**
 * The engine in this process, no HTTP: one stream (median of `requestsPerStream` runs after a
 * warm-up), then `batch` concurrent streams for the decode rate at that batch size.
 */
async function engineAlone(o: Options, env: Record<string, string>, batch: number, runtime: RuntimeKind) {
  const engine = await createEngine(o.model, {
    runtime,
    maxBatchSize: Math.max(1, batch),
    imageCacheBytes: o.imageCache ? undefined : 0, // as the servers of the sweeps
    prefixCacheBytes: 0,
    intraOpNumThreads: env.INTRA_OP_THREADS ? Number(env.INTRA_OP_THREADS) : undefined,
  });
  await engine.ready();
  const image = new Uint8Array(readFileSync(o.image));
  let n = 0;
  const request = (): GenerationRequest => benchRequest(`bench-${n++}`, image, o.prompt, o.outputTokens);
  /** Runs one generation and returns its arrival time and token timestamps (seconds). */
  const run = async () => {
    const t0 = performance.now() / 1000;
    const times: number[] = [];
    for await (const ev of engine.generate(request())) {
      if (ev.type === 'delta') for (let i = 0; i < ev.tokenIds.length; i++) times.push(performance.now() / 1000);
    }
    return { t0, times };
  };
  try {
    await run(); // warm-up
    const single: { ttft: number; rate: number }[] = [];
    for (let i = 0; i < o.requestsPerStream; i++) {
      const { t0, times } = await run();
      single.push({ ttft: times[0] - t0, rate: (times.length - 1) / (times[times.length - 1] - times[0]) });
    }
    const together = batch > 1 ? await Promise.all(Array.from({ length: batch }, run)) : [];
    return {
      ttft: round(median(single.map((r) => r.ttft))),
      decodeTokensPerSecond: round(median(single.map((r) => r.rate))),
      batch,
      batchSteadyDecodeTokensPerSecond: batch > 1 ? roundOrNull(steadyDecodeRate(together.map((r) => r.times))) : null,
    };
  } finally {
    await engine.close();
  }
}

function imageDataUrl(path: string): string {
  const ext = path.toLowerCase().endsWith('.png') ? 'png' : 'jpeg';
  return `data:image/${ext};base64,${readFileSync(path).toString('base64')}`;
}

function markdown(report: ReturnType<typeof buildReport>): string {
  const mb = (b: number) => `${Math.round(b / 2 ** 20)}`;
  const lines = [
    `# Serving benchmark: ${report.model}`,
    '',
    `${report.date}, ${report.machine}. Each request: one image (${basename(report.options.image)}) + prompt, ` +
      `${report.options.outputTokens} output tokens (ignore_eos), ${report.options.requestsPerStream} requests per stream.`,
    '',
    '| concurrency | out tok/s | req/s | TTFT p50 (s) | TTFT p95 (s) | ITL p50 (s) | ITL p95 (s) | server RSS (MiB) | unbatched tok/s | batching speed-up |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  report.batched.forEach((l, i) => {
    const u = report.unbatched[i];
    lines.push(
      `| ${l.concurrency} | ${l.outputTokensPerSecond} | ${l.requestsPerSecond} | ${l.ttftP50} | ${l.ttftP95} | ${l.itlP50} | ${l.itlP95} | ${mb(l.serverRssBytes)} | ` +
        `${u ? u.outputTokensPerSecond : '-'} | ${u ? round(l.outputTokensPerSecond / u.outputTokensPerSecond) + 'x' : '-'} |`,
    );
  });
  const e = report.engineAlone;
  lines.push(
    '',
    `Steady decode: tokens/s of all streams while every stream of the level decodes at once (first request of each ` +
      `stream; '-' when their prefills never let them overlap): ` +
      report.batched.map((l) => `c=${l.concurrency}: ${l.steadyDecodeTokensPerSecond ?? '-'}`).join(', ') + '.',
    '',
    `Engine alone (no HTTP), one stream: decode ${e.decodeTokensPerSecond} tok/s, TTFT ${e.ttft} s` +
      (e.batch > 1 ? `; ${e.batch} streams at once: ${e.batchSteadyDecodeTokensPerSecond ?? '-'} tok/s steady decode in all ` +
        `(${e.batchSteadyDecodeTokensPerSecond ? round(e.batchSteadyDecodeTokensPerSecond / e.decodeTokensPerSecond) + 'x one stream' : 'no overlap'}). ` : '. ') +
      `Through HTTP at concurrency 1: decode ${report.httpSingleStreamDecode} tok/s ` +
      `(${report.httpOverDecodeRatio !== null ? Math.round(report.httpOverDecodeRatio * 100) + '% of the engine alone' : 'n/a'}).`,
    '',
  );
  if (report.runtimes.length > 1) lines.push(...runtimeMarkdown(report.runtimes, report.runtimeRatios));
  return lines.join('\n');
}

interface RuntimeRun {
  runtime: RuntimeKind;
  batched: LevelResult[];
  engineAlone: Awaited<ReturnType<typeof engineAlone>>;
  /** The runtime backend alone: decode step time with a past of stepPast positions. */
  decodeSteps: StepTiming[];
}

/** Each later runtime against the first, within this run: >1 means the first is faster. */
function runtimeRatios(runs: RuntimeRun[]) {
  const [first, ...rest] = runs;
  const ratio = (a: number | null, b: number | null): number | null => (a && b ? round(a / b) : null);
  return rest.map((r) => ({
    of: first.runtime,
    over: r.runtime,
    outputTokensPerSecond: first.batched.map((l, i) => ({ concurrency: l.concurrency, ratio: ratio(l.outputTokensPerSecond, r.batched[i]?.outputTokensPerSecond ?? null) })),
    engineDecode: ratio(first.engineAlone.decodeTokensPerSecond, r.engineAlone.decodeTokensPerSecond),
    engineBatchDecode: ratio(first.engineAlone.batchSteadyDecodeTokensPerSecond, r.engineAlone.batchSteadyDecodeTokensPerSecond),
    /** Step time of the later runtime over the first's (the first's speed-up per step). */
    decodeStep: first.decodeSteps.map((s, i) => ({ batch: s.batch, ratio: ratio(r.decodeSteps[i]?.stepMs ?? null, s.stepMs) })),
  }));
}

function runtimeMarkdown(runs: RuntimeRun[], ratios: ReturnType<typeof runtimeRatios>): string[] {
  const lines = [
    '## Runtimes side by side (same run)',
    '',
    '| runtime | ' + runs[0].batched.map((l) => `c=${l.concurrency} tok/s`).join(' | ') + ' | engine decode tok/s | ' +
      runs[0].decodeSteps.map((s) => `step ms B=${s.batch}, past ${s.past}`).join(' | ') + ' | bytes into JS per step (B=1) |',
    '|' + '---|'.repeat(3 + runs[0].batched.length + runs[0].decodeSteps.length),
  ];
  for (const r of runs) {
    lines.push(
      `| ${r.runtime} | ${r.batched.map((l) => l.outputTokensPerSecond).join(' | ')} | ${r.engineAlone.decodeTokensPerSecond} | ` +
        `${r.decodeSteps.map((s) => s.stepMs).join(' | ')} | ${r.decodeSteps[0]?.perStep.bytesToJs ?? '-'} (logits ${r.decodeSteps[0]?.logitsBytes ?? '-'}) |`,
    );
  }
  for (const q of ratios) {
    lines.push(
      '',
      `${q.of} over ${q.over}: HTTP out tok/s ` + q.outputTokensPerSecond.map((x) => `c=${x.concurrency} ${x.ratio ?? '-'}x`).join(', ') +
        `; engine decode ${q.engineDecode ?? '-'}x, batched ${q.engineBatchDecode ?? '-'}x; decode step ` +
        q.decodeStep.map((x) => `B=${x.batch} ${x.ratio ?? '-'}x faster`).join(', ') + '.',
    );
  }
  lines.push('');
  return lines;
}

function buildReport(o: Options, runs: RuntimeRun[], unbatched: LevelResult[]) {
  const { batched, engineAlone: engine } = runs[0];
  const c1 = batched.find((l) => l.concurrency === 1);
  const httpDecode = c1 && c1.meanItl > 0 ? round(1 / c1.meanItl) : null;
  const manifest = JSON.parse(readFileSync(join(o.model, 'manifest.json'), 'utf8'));
  return {
    model: manifest.name as string,
    dtype: manifest.dtype as string,
    quantization: manifest.quantization,
    date: new Date().toISOString(),
    machine: `${(process.env.BENCH_MACHINE ?? '').trim() || 'this machine'} (node ${process.version})`,
    options: { ...o, model: o.model },
    batched,
    unbatched,
    engineAlone: engine,
    httpSingleStreamDecode: httpDecode,
    httpOverDecodeRatio: httpDecode !== null && engine.decodeTokensPerSecond > 0 ? round(httpDecode / engine.decodeTokensPerSecond) : null,
    /** The runtime of the fields above. */
    runtime: runs[0].runtime,
    runtimes: runs,
    runtimeRatios: runtimeRatios(runs),
  };
}

/** The runtime backend alone: decode step time at batch 1 and the largest concurrency. */
async function decodeSteps(o: Options, runtime: RuntimeKind): Promise<StepTiming[]> {
  const g = packageDecoder(o.model);
  const batches = [...new Set([1, Math.max(...o.concurrency)])];
  const bytesPerPosition = 2 * g.dims.numLayers * g.dims.numKvHeads * g.dims.headDim * 4;
  const { backend } = await loadDecoder(g, {
    runtime,
    executionProvider: 'cpu',
    threads: o.threads ? Number(o.threads) : undefined,
    kvCacheBytes: Math.max(...batches) * (o.stepPast + 64) * bytesPerPosition,
  });
  try {
    const out: StepTiming[] = [];
    for (const b of batches) out.push(await timeDecodeSteps(backend, b, o.stepPast, o.quick ? 5 : 20, g.dims.vocabSize));
    for (const s of out) console.error(`${runtime} decode step B=${s.batch} past ${s.past}: ${s.stepMs} ms, ${s.perStep.bytesToJs} bytes into JS`);
    return out;
  } finally {
    await backend.release();
  }
}

/** A file name under o.out that no earlier run of the day took: <date>-<name>[-2, -3...]. */
function reportStem(o: Options, date: string, name: string): string {
  const base = join(o.out, `${date.slice(0, 10)}-${name}`);
  let stem = base;
  for (let n = 2; existsSync(`${stem}.json`); n++) stem = `${base}-${n}`;
  return stem;
}

function writeReport(stem: string, report: unknown, md: string): void {
  writeFileSync(`${stem}.json`, JSON.stringify(report, null, 2) + '\n');
  writeFileSync(`${stem}.md`, md);
  console.log(md);
  console.error(`wrote ${stem}.json and ${stem}.md`);
}

async function structuredMain(o: Options, schemaFile: string): Promise<void> {
  const so: StructuredOptions = {
    model: o.model,
    schemaFile,
    image: o.image,
    prompt: o.prompt,
    outputTokens: o.outputTokens,
    rounds: o.requestsPerStream,
    batch: Math.max(...o.concurrency),
    threads: o.threads,
  };
  const result = await structuredComparison(so);
  const manifest = JSON.parse(readFileSync(join(o.model, 'manifest.json'), 'utf8'));
  const precision = manifest.quantization ? manifest.quantization.method : manifest.dtype;
  const name = `${manifest.name}-${precision}-structured${o.quick ? '-quick' : ''}`;
  const date = new Date().toISOString();
  const machine = `${(process.env.BENCH_MACHINE ?? '').trim() || 'this machine'} (node ${process.version})`;
  mkdirSync(o.out, { recursive: true });
  writeReport(reportStem(o, date, name), { model: manifest.name, date, machine, options: so, ...result }, structuredMarkdown(manifest.name, date, machine, result, so));
}

async function multiTurnMain(o: Options): Promise<void> {
  const env: Record<string, string> = { RUNTIME: o.runtimes[0] };
  if (o.threads) env.INTRA_OP_THREADS = o.threads;
  const mo: MultiTurnOptions = { model: o.model, image: o.image, concurrency: o.concurrency, turns: o.turns, outputTokens: o.outputTokens, prompt: o.prompt, env };
  const result = await multiTurnComparison(mo);
  const manifest = JSON.parse(readFileSync(join(o.model, 'manifest.json'), 'utf8'));
  const precision = manifest.quantization ? manifest.quantization.method : manifest.dtype;
  const name = `${manifest.name}-${precision}-multi-turn${o.quick ? '-quick' : ''}`;
  const date = new Date().toISOString();
  const machine = `${(process.env.BENCH_MACHINE ?? '').trim() || 'this machine'} (node ${process.version}), ${o.runtimes[0]} runtime`;
  mkdirSync(o.out, { recursive: true });
  writeReport(reportStem(o, date, name), { model: manifest.name, date, machine, options: mo, ...result }, multiTurnMarkdown(manifest.name, date, machine, mo, result));
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.jsonSchema) return structuredMain(o, o.jsonSchema);
  if (o.multiTurn) return multiTurnMain(o);
  // Every request sends the same image; without --image-cache the server's image embedding cache
  // is off so that each request pays for its vision encoder, as distinct images would.
  const env: Record<string, string> = {
    MAX_BATCH_SIZE: String(Math.max(...o.concurrency)),
    MAX_WAITING: '256',
    IMAGE_CACHE_SIZE: o.imageCache ? '256MB' : '0',
    PREFIX_CACHE_SIZE: '0',
  };
  if (o.threads) env.INTRA_OP_THREADS = o.threads;
  const runs: RuntimeRun[] = [];
  let unbatched: LevelResult[] = [];
  for (const [i, runtime] of o.runtimes.entries()) {
    const renv = { ...env, RUNTIME: runtime };
    const batched = await sweep(o, renv, `${runtime} batched`);
    if (i === 0 && o.unbatched) unbatched = await sweep(o, { ...renv, MAX_BATCH_SIZE: '1' }, `${runtime} unbatched`);
    const engine = await engineAlone(o, renv, Math.max(...o.concurrency), runtime);
    runs.push({ runtime, batched, engineAlone: engine, decodeSteps: await decodeSteps(o, runtime) });
  }
  const report = buildReport(o, runs, unbatched);
  mkdirSync(o.out, { recursive: true });
  const precision = report.quantization ? report.quantization.method : report.dtype;
  const mode = o.quick ? '-quick' : o.imageCache ? '-image-cache' : '';
  const name = report.model.endsWith(`-${precision}`) ? report.model : `${report.model}-${precision}`;
  // A repeated run on the same day gets -2, -3...: runs are repeated for medians (bench:summary).
  writeReport(reportStem(o, report.date, `${name}${mode}`), report, markdown(report));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
