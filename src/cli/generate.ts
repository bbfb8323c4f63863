// `npm run generate -- --model DIR [--image FILE] --prompt "..."`: one request through the engine,
// the answer streamed to stdout, timings to stderr.

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { createEngine } from '../engine/engine.js';
import { isEngineError } from '../engine/errors.js';
import type { ChatMessage, ContentPart, GenerationRequest } from '../engine/types.js';

const USAGE = `usage: npm run generate -- --model DIR --prompt TEXT [options]
  --model DIR          model package directory
  --prompt TEXT        the user message
  --image FILE         an image to ask about (repeatable)
  --system TEXT        replace the package's system message
  --max-tokens N       default 256
  --temperature T      default 0 (greedy)
  --top-p P            default 1
  --top-k K            default 0 (off)
  --seed N             default: random
  --threads N          ORT intra-op threads
  --provider cpu|cuda  execution provider (default cpu)
  --runtime native|js  which runtime runs the graphs (default native)`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      prompt: { type: 'string' },
      image: { type: 'string', multiple: true },
      system: { type: 'string' },
      'max-tokens': { type: 'string', default: '256' },
      temperature: { type: 'string', default: '0' },
      'top-p': { type: 'string', default: '1' },
      'top-k': { type: 'string', default: '0' },
      seed: { type: 'string' },
      threads: { type: 'string' },
      provider: { type: 'string', default: 'cpu' },
      runtime: { type: 'string', default: 'native' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || !values.model || values.prompt === undefined) {
    console.error(USAGE);
    return values.help ? 0 : 2;
  }
  const num = (name: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${v}`);
    return n;
  };
  if (values.provider !== 'cpu' && values.provider !== 'cuda') throw new Error(`--provider must be cpu or cuda`);
  if (values.runtime !== 'native' && values.runtime !== 'js') throw new Error(`--runtime must be native or js`);

  const content: ContentPart[] = [];
  for (const file of values.image ?? []) content.push({ type: 'image', data: new Uint8Array(await readFile(file)) });
  content.push({ type: 'text', text: values.prompt });
  const messages: ChatMessage[] = [];
  if (values.system !== undefined) messages.push({ role: 'system', content: values.system });
  messages.push({ role: 'user', content });

  const request: GenerationRequest = {
    id: 'cli',
    messages,
    sampling: {
      temperature: num('temperature', values.temperature),
      topP: num('top-p', values['top-p']),
      topK: num('top-k', values['top-k']),
      minP: 0,
      repetitionPenalty: 1,
      presencePenalty: 0,
      frequencyPenalty: 0,
      seed: values.seed === undefined ? null : num('seed', values.seed),
    },
    maxTokens: num('max-tokens', values['max-tokens']),
    stop: [],
    ignoreEos: false,
    logprobs: null,
    deadlineMs: null,
  };

  const engine = await createEngine(values.model, {
    runtime: values.runtime,
    executionProvider: values.provider,
    intraOpNumThreads: values.threads === undefined ? undefined : num('threads', values.threads),
    warmup: false,
  });
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  try {
    await engine.ready();
    for await (const event of engine.generate(request, abort.signal)) {
      if (event.type === 'delta') process.stdout.write(event.text);
      else {
        const t = event.timings;
        process.stdout.write('\n');
        console.error(
          `[${event.finishReason}] prompt ${event.usage.promptTokens} tokens (${event.usage.imageTokens} image), ` +
            `${event.usage.completionTokens} generated; first token ${t.firstToken.toFixed(3)}s ` +
            `(preprocess ${t.imagePreprocess.toFixed(3)}s, vision ${t.visionEncoder.toFixed(3)}s, prefill ${t.prefill.toFixed(3)}s), ` +
            `decode ${t.decode.toFixed(3)}s` +
            (event.usage.completionTokens > 1 ? ` (${((event.usage.completionTokens - 1) / t.decode).toFixed(1)} tok/s)` : ''),
        );
      }
    }
  } finally {
    await engine.close();
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(isEngineError(err) ? `error (${err.code}): ${err.message}` : `error: ${(err as Error).message}`);
    process.exit(1);
  },
);
