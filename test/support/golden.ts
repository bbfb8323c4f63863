// Loads the committed fixture packages and golden files (test/fixtures/README.md), or the ones
// under $TINYLLAVA_FIXTURES when set, and turns golden cases into engine requests.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InferenceSession } from 'onnxruntime-node';
import { loadModelPort } from '../../src/engine/model-adapter.js';
import { isSharedKvDecoder } from '../../src/runtime/graph-io.js';
import type { RunnerOptions } from '../../src/runtime/model-runner.js';
import type { RuntimeKind } from '../../src/runtime/worker-protocol.js';
import type { ModelPort } from '../../src/engine/model-port.js';
import type { ChatMessage, GenerationRequest, SamplingParams } from '../../src/engine/types.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const fixturesDir = resolve(process.env.TINYLLAVA_FIXTURES ?? join(repoRoot, 'test/fixtures'));

export interface GoldenCase {
  name: string;
  messages: { role: 'system' | 'user' | 'assistant'; content: string | ({ type: 'text'; text: string } | { type: 'image'; file: string })[] }[];
  system: string | null;
  prompt: string;
  prompt_ids: number[];
  input_length: number;
  image_spans: [number, number][];
  first_step_top5: { ids: number[]; logits: number[] };
  greedy_ids: number[];
  /** The reference's answer text for greedy_ids (its tokenizer's decode, stripped where it strips). */
  answer_text: string;
}

export interface Golden {
  package: string;
  preprocessing_id: string;
  cases: GoldenCase[];
}

/** Package names that have both a package directory and a golden file. */
export function goldenPackages(): string[] {
  const packages = join(fixturesDir, 'packages');
  if (!existsSync(packages)) return [];
  return readdirSync(packages)
    .filter((name) => existsSync(join(fixturesDir, 'golden', `${name}.json`)))
    .sort();
}

export function loadGolden(name: string): Golden {
  return JSON.parse(readFileSync(join(fixturesDir, 'golden', `${name}.json`), 'utf8')) as Golden;
}

export function packageDir(name: string): string {
  return join(fixturesDir, 'packages', name);
}

/** The package's model, as the engine loads it. */
export async function goldenPort(name: string): Promise<ModelPort> {
  return loadModelPort(packageDir(name), { maxImagePixels: 50_000_000 });
}

/** Both runtimes: the suites that check results against the reference run on each. */
export const RUNTIMES: readonly RuntimeKind[] = ['native', 'js'];

/**
 * The runtimes that read a package's decoder: both, but only `native` for a shared_kv decoder
 * (GroupQueryAttention over one KV buffer; the js runtime refuses it). The form is the graph's
 * own (its input names), as the runtimes read it.
 */
export async function runtimesFor(name: string): Promise<readonly RuntimeKind[]> {
  const dir = packageDir(name);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { files: { decoder: string } };
  const session = await InferenceSession.create(join(dir, manifest.files.decoder));
  try {
    return isSharedKvDecoder(session.inputNames) ? ['native'] : RUNTIMES;
  } finally {
    await session.release();
  }
}

/** Runner options for a package, small and single-threaded for tests. */
export function runnerOptions(port: ModelPort, runtime: RuntimeKind = 'native'): RunnerOptions {
  return {
    runtime,
    graphs: port.graphs,
    decoder: port.text,
    kvCacheBytes: 1 << 26,
    imagePreprocessing: port.imagePreprocessing,
    intraOpNumThreads: 1,
    visionIntraOpNumThreads: 1,
  };
}

/** A golden case's messages for the engine, images read from the fixture images folder. */
export function caseMessages(c: GoldenCase): ChatMessage[] {
  const messages: ChatMessage[] = [];
  if (c.system !== null) messages.push({ role: 'system', content: c.system });
  for (const m of c.messages) {
    messages.push({
      role: m.role,
      content:
        typeof m.content === 'string'
          ? m.content
          : m.content.map((p) =>
              p.type === 'text' ? p : { type: 'image' as const, data: new Uint8Array(readFileSync(join(fixturesDir, 'images', p.file))) },
            ),
    });
  }
  return messages;
}

export const greedy: SamplingParams = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: 0,
};

export function request(messages: ChatMessage[], overrides: Partial<GenerationRequest> = {}): GenerationRequest {
  return {
    id: 'test',
    messages,
    sampling: greedy,
    maxTokens: 32,
    stop: [],
    ignoreEos: true,
    logprobs: null,
    deadlineMs: null,
    ...overrides,
  };
}
