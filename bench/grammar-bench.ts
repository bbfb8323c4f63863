// `npm run bench:grammar -- TOKENIZER_JSON [LOGIT_ROWS] ...`: the grammar engine alone, per
// tokenizer: building the token trie, compiling schemas, and the per-token costs (computing a
// mask off the event loop, applying it to a row of logits, consuming the token) while stepping
// through a valid answer. What blocks the event loop is the synchronous part of each call
// (`*CallMs`: until the promise is returned; applying and consuming are synchronous by design);
// `*StallMs`, the longest lateness of a 1 ms timer meanwhile, also counts a busy machine's
// scheduling delays, so it is an upper bound.
//
// maskComputeMs is the mask's time on the pool thread, maskAwaitMs the time until the event loop
// has it (the thread pool's round trip included).
//
// The answer is walked by taking, at every step, the longest allowed token whose bytes continue
// the sample text, so that any tokenizer can follow any sample the grammar accepts.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Grammars } from '../src/engine/grammar.js';
import { loadGrammarTokenizer, type GrammarMatcher, type GrammarTokenizer } from '../src/engine/grammar-native.js';
import type { OutputConstraint } from '../src/engine/types.js';
import { round } from './stats.js';

const MAIN_SCHEMA = {
  type: 'object',
  properties: {
    merchant: { type: 'string' },
    category: { enum: ['food', 'travel', 'office', 'other'] },
    count: { type: 'integer' },
    items: {
      type: 'array',
      items: {
        type: 'object',
        properties: { name: { type: 'string' }, price: { type: 'number' } },
        required: ['name', 'price'],
        additionalProperties: false,
      },
    },
  },
  required: ['merchant', 'category', 'count', 'items'],
  additionalProperties: false,
};

const HARD_SCHEMA = {
  ...MAIN_SCHEMA,
  properties: {
    ...MAIN_SCHEMA.properties,
    merchant: { type: 'string', maxLength: 64 },
    date: { type: 'string', pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' },
    count: { type: 'integer', minimum: 1, maximum: 999 },
    items: { ...MAIN_SCHEMA.properties.items, minItems: 1, maxItems: 20 },
  },
  required: [...MAIN_SCHEMA.required, 'date'],
};

const SAMPLE = {
  merchant: 'Café du Marché, 12 rue des Lilas',
  category: 'food',
  date: '2026-11-27',
  count: 3,
  items: [
    { name: 'Croissant au beurre', price: 1.9 },
    { name: 'Espresso', price: 2.5 },
    { name: 'Tarte aux pommes (part)', price: 4.75 },
  ],
};

/** The sample with the schema's properties only, in the schema's order (llguidance keeps that order). */
function sampleFor(schema: { properties: Record<string, unknown> }): string {
  const s = SAMPLE as Record<string, unknown>;
  return JSON.stringify(Object.fromEntries(Object.keys(schema.properties).map((k) => [k, s[k]])));
}

/** The longest stall of the event loop while `f` runs, in ms (a 1 ms interval timer's lateness). */
async function stallWhile<T>(f: () => Promise<T>): Promise<{ value: T; stallMs: number }> {
  let worst = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 1);
    last = now;
  }, 1);
  try {
    const value = await f();
    return { value, stallMs: round(Math.max(worst, performance.now() - last - 1)) };
  } finally {
    clearInterval(timer);
  }
}

function stats(xs: number[]): { mean: number; max: number } {
  return { mean: round(xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length)), max: round(Math.max(...xs)) };
}

/** Steps a matcher through `text`; per-step times in ms. */
async function walk(tok: GrammarTokenizer, m: GrammarMatcher, text: string, rows: number) {
  const bytes = Buffer.from(text, 'utf8');
  const tokenBytes = Array.from({ length: tok.vocabSize }, (_, i) => tok.tokenBytes(i));
  const row = new Float32Array(rows);
  const mask: number[] = [];
  const compute: number[] = [];
  const apply: number[] = [];
  const consume: number[] = [];
  let at = 0;
  let stalls = 0;
  while (at < bytes.length) {
    const t0 = performance.now();
    const { value: computeMs, stallMs } = await stallWhile(() => m.computeMask());
    compute.push(computeMs);
    const t1 = performance.now();
    stalls = Math.max(stalls, stallMs);
    row.fill(0);
    m.applyMask(row, true);
    const t2 = performance.now();
    let best = -1;
    for (let id = 0; id < rows; id++) {
      if (row[id] === -Infinity) continue;
      const b = tokenBytes[id];
      if (b.length > 0 && b[0] !== 0xff && (best < 0 || b.length > tokenBytes[best].length) && bytes.subarray(at, at + b.length).equals(b)) best = id;
    }
    if (best < 0) throw new Error(`no allowed token continues the sample at byte ${at}: ${JSON.stringify(bytes.subarray(at).toString())}`);
    const t3 = performance.now();
    m.consume(best);
    const t4 = performance.now();
    mask.push(t1 - t0);
    apply.push(t2 - t1);
    consume.push(t4 - t3);
    at += tokenBytes[best].length;
  }
  return { tokens: mask.length, maskComputeMs: stats(compute), maskAwaitMs: stats(mask), applyMs: stats(apply), consumeMs: stats(consume), maskStallMs: stalls };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.length === 0 || args.includes('--help')) {
    console.log('usage: npm run bench:grammar -- TOKENIZER_JSON [LOGIT_ROWS] [TOKENIZER_JSON [LOGIT_ROWS] ...]');
    process.exit(args.length === 0 ? 2 : 0);
  }
  const inputs: { path: string; rows: number | null }[] = [];
  for (const a of args) {
    if (/^\d+$/.test(a) && inputs.length > 0) inputs[inputs.length - 1].rows = Number(a);
    else inputs.push({ path: a, rows: null });
  }
  for (const input of inputs) {
    const json = readFileSync(input.path);
    const size = Object.keys(JSON.parse(json.toString('utf8')).model.vocab).length;
    const rows = input.rows ?? size;
    let trieCallMs = 0;
    const load = await stallWhile(async () => {
      const t0 = performance.now();
      const pending = loadGrammarTokenizer(input.path, rows, []);
      trieCallMs = performance.now() - t0;
      const tok = await pending;
      return { tok, ms: performance.now() - t0 };
    });
    const tok = load.value.tok;
    const report: Record<string, unknown> = {
      tokenizer: input.path,
      vocab: tok.vocabSize,
      trieMs: round(load.value.ms),
      trieCallMs: round(trieCallMs),
      trieStallMs: load.stallMs,
    };
    for (const [name, schema] of Object.entries({ main: MAIN_SCHEMA, hard: HARD_SCHEMA })) {
      const grammars = new Grammars({ tokenizerPath: input.path, logitRows: rows, stopTokenIds: [] });
      const c: OutputConstraint = { type: 'json_schema', schema, param: 'schema' };
      await grammars.compile({ type: 'regex', pattern: 'x', param: 'warm' }); // the trie, not timed here
      let compileCallMs = 0;
      const compiled = await stallWhile(async () => {
        const t0 = performance.now();
        const pending = grammars.compile(c);
        compileCallMs = performance.now() - t0;
        const g = await pending;
        return { g, ms: performance.now() - t0 };
      });
      const cached = performance.now();
      await grammars.compile(c);
      const hitMs = performance.now() - cached;
      report[name] = {
        compileMs: round(compiled.value.ms),
        compileCallMs: round(compileCallMs),
        compileStallMs: compiled.stallMs,
        cacheHitMs: round(hitMs),
        ...(await walk(tok, compiled.value.g.matcher(), sampleFor(schema), rows)),
      };
    }
    console.log(JSON.stringify(report, null, 2));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
