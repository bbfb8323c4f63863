// `npm run bench -- --model DIR --json-schema FILE`: the cost of structured outputs. One engine
// in this process (no HTTP), the same image-and-prompt request with and without the schema as
// response_format, at batch 1 and batch N, interleaved round by round (plain b1, schema b1,
// plain bN, schema bN) so that the ratios come from the same minutes of a noisy machine.
//
// Decode rate: batch 1, tokens after the first over the time from the first to the last; batch
// N, the steady rate while every stream decodes (stats.ts). Constrained answers may end before
// max_tokens (ignore_eos keeps stop tokens out, but a complete grammar ends the answer), so the
// report also gives their mean length and how many validate against the schema.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Ajv } from 'ajv';
import { createEngine } from '../src/engine/engine.js';
import type { GenerationRequest, OutputConstraint } from '../src/engine/types.js';
import { benchRequest } from './engine-request.js';
import { median, round, steadyDecodeRate } from './stats.js';

export interface StructuredOptions {
  model: string;
  schemaFile: string;
  image: string;
  prompt: string;
  outputTokens: number;
  rounds: number;
  batch: number;
  threads: string | undefined;
}

interface Run {
  t0: number;
  times: number[];
  text: string;
  finish: string;
}

export interface StructuredReport {
  schemaFile: string;
  batch: number;
  rounds: number;
  plain: { decodeB1: number; decodeBN: number | null };
  schema: { decodeB1: number; decodeBN: number | null; meanTokens: number; valid: number; answers: number };
  ratioB1: number;
  ratioBN: number | null;
}

export async function structuredComparison(o: StructuredOptions): Promise<StructuredReport> {
  const schema = JSON.parse(readFileSync(o.schemaFile, 'utf8')) as object;
  const validate = new Ajv({ strict: false }).compile(schema);
  const engine = await createEngine(o.model, {
    maxBatchSize: o.batch,
    intraOpNumThreads: o.threads ? Number(o.threads) : undefined,
  });
  await engine.ready();
  const image = new Uint8Array(readFileSync(o.image));
  const constraint: OutputConstraint = { type: 'json_schema', schema, param: 'response_format.json_schema.schema' };
  let n = 0;
  const request = (constrained: boolean): GenerationRequest =>
    benchRequest(`bench-${n++}`, image, o.prompt, o.outputTokens, constrained ? constraint : null);
  const run = async (constrained: boolean): Promise<Run> => {
    const t0 = performance.now() / 1000;
    const times: number[] = [];
    let text = '';
    let finish = '';
    for await (const ev of engine.generate(request(constrained))) {
      if (ev.type === 'delta') {
        text += ev.text;
        for (let i = 0; i < ev.tokenIds.length; i++) times.push(performance.now() / 1000);
      } else finish = ev.finishReason;
    }
    return { t0, times, text, finish };
  };
  const rate = (r: Run): number => (r.times.length - 1) / (r.times[r.times.length - 1] - r.times[0]);
  const together = (constrained: boolean): Promise<Run[]> => Promise.all(Array.from({ length: o.batch }, () => run(constrained)));

  const b1 = { plain: [] as number[], schema: [] as number[] };
  const bN = { plain: [] as number[], schema: [] as number[] };
  const answers: Run[] = [];
  try {
    await run(false); // warm-up: the image embedding cache, first-call allocations
    await run(true); // and the token trie, the grammar
    for (let i = 0; i < o.rounds; i++) {
      b1.plain.push(rate(await run(false)));
      const s = await run(true);
      b1.schema.push(rate(s));
      answers.push(s);
      if (o.batch > 1) {
        const p = steadyDecodeRate((await together(false)).map((r) => r.times));
        if (p !== null) bN.plain.push(p);
        const runs = await together(true);
        const c = steadyDecodeRate(runs.map((r) => r.times));
        if (c !== null) bN.schema.push(c);
        answers.push(...runs);
      }
      console.error(`structured round ${i + 1}/${o.rounds}: b1 ${round(b1.plain.at(-1)!)} -> ${round(b1.schema.at(-1)!)} tok/s` +
        (o.batch > 1 ? `, b${o.batch} ${round(bN.plain.at(-1) ?? NaN)} -> ${round(bN.schema.at(-1) ?? NaN)} tok/s` : ''));
    }
  } finally {
    await engine.close();
  }
  const med = (xs: number[]): number | null => (xs.length > 0 ? round(median(xs)) : null);
  const valid = answers.filter((r) => {
    if (r.finish !== 'stop') return false;
    try {
      return validate(JSON.parse(r.text)) === true;
    } catch {
      return false;
    }
  }).length;
  const plain = { decodeB1: med(b1.plain)!, decodeBN: med(bN.plain) };
  const constrained = {
    decodeB1: med(b1.schema)!,
    decodeBN: med(bN.schema),
    meanTokens: round(answers.reduce((s, r) => s + r.times.length, 0) / Math.max(1, answers.length)),
    valid,
    answers: answers.length,
  };
  // Each ratio within its round, then the median: the rounds see different machine load.
  const ratios = (a: number[], b: number[]): number | null => med(a.slice(0, b.length).map((x, i) => b[i] / x));
  return {
    schemaFile: o.schemaFile,
    batch: o.batch,
    rounds: o.rounds,
    plain,
    schema: constrained,
    ratioB1: ratios(b1.plain, b1.schema)!,
    ratioBN: o.batch > 1 ? ratios(bN.plain, bN.schema) : null,
  };
}

export function structuredMarkdown(model: string, date: string, machine: string, r: StructuredReport, o: StructuredOptions): string {
  const bn = `batch ${r.batch}`;
  return [
    `# Structured outputs benchmark: ${model}`,
    '',
    `${date}, ${machine}. Engine alone (no HTTP), greedy, one image + prompt, ${o.outputTokens} output tokens (ignore_eos), ` +
      `${r.rounds} rounds; schema ${r.schemaFile} as response_format. Medians over the rounds; each ratio is taken within its round.`,
    '',
    `| | decode tok/s, batch 1 | decode tok/s, ${bn} (steady) |`,
    '|---|---|---|',
    `| unconstrained | ${r.plain.decodeB1} | ${r.plain.decodeBN ?? '-'} |`,
    `| JSON schema | ${r.schema.decodeB1} | ${r.schema.decodeBN ?? '-'} |`,
    `| **constrained / unconstrained** | **${r.ratioB1}** | **${r.ratioBN ?? '-'}** |`,
    '',
    `Constrained answers: ${r.schema.meanTokens} tokens on average; ${r.schema.valid} of ${r.schema.answers} ended and validate against the schema ` +
      '(the others reached max_tokens inside the JSON).',
    '',
  ].join('\n');
}
