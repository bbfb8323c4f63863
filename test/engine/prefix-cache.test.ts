// The prefix cache end to end on every fixture package and both runtimes: an engine with it on
// (the default) gives the tokens an engine with it off (PREFIX_CACHE_SIZE 0) gives, and the
// reference's, for every golden case run twice, for multi-turn conversations, for prompts that
// share only part of a prefix, for the same text with another image (which must not hit past the
// text before the image), for concurrent conversations, and for a seeded sampler; and it reports
// the positions it took as cachedTokens and in stats().

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createEngineFromPort, type EngineOptions, type LoadedEngine } from '../../src/engine/engine.js';
import type { ChatMessage, ContentPart, GenerationEvent, GenerationRequest } from '../../src/engine/types.js';
import { caseMessages, fixturesDir, goldenPackages, goldenPort, loadGolden, request, runtimesFor, type GoldenCase } from '../support/golden.js';

const BLOCK = 16; // PREFIX_BLOCK_POSITIONS
const threads: EngineOptions = { warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1, maxBatchSize: 8 };

interface Outcome {
  ids: number[];
  text: string;
  cached: number;
  prompt: number;
}

async function run(engine: LoadedEngine, req: GenerationRequest): Promise<Outcome> {
  const ids: number[] = [];
  let text = '';
  let done: Extract<GenerationEvent, { type: 'done' }> | null = null;
  for await (const e of engine.generate(req)) {
    if (e.type === 'delta') {
      ids.push(...e.tokenIds);
      text += e.text;
    } else done = e;
  }
  assert.ok(done);
  // the release (and the store into the prefix cache) follows `done`
  for (let i = 0; i < 100 && engine.stats().running > 0; i++) await new Promise((r) => setTimeout(r, 5));
  return { ids, text, cached: done.usage.cachedTokens, prompt: done.usage.promptTokens };
}

/** The same request on both engines, one after the other. */
async function both(on: LoadedEngine, off: LoadedEngine, req: GenerationRequest): Promise<[Outcome, Outcome]> {
  return [await run(on, req), await run(off, req)];
}

const floorBlock = (n: number): number => Math.floor(n / BLOCK) * BLOCK;
const image = (file: string): ContentPart[] => [{ type: 'image', data: new Uint8Array(readFileSync(join(fixturesDir, 'images', file))) }];

/** The messages of a conversation about a case's image after `answers` earlier turns. */
function conversation(c: GoldenCase, answers: string[], questions: string[]): ChatMessage[] {
  const messages = caseMessages(c);
  answers.forEach((answer, i) => messages.push({ role: 'assistant', content: answer }, { role: 'user', content: questions[i] }));
  return messages;
}

for (const name of goldenPackages()) for (const runtime of await runtimesFor(name)) {
  describe(`${name}: prefix cache (${runtime} runtime)`, () => {
    const golden = loadGolden(name);
    const withImage = golden.cases.find((c) => c.image_spans.length === 1 && c.messages.length === 1) ?? golden.cases[0];
    // the image's last position, and the cached positions a prompt with it must at least get
    const imageEnd = withImage.image_spans.length > 0 ? withImage.image_spans[0][0] + withImage.image_spans[0][1] : 0;
    let on: LoadedEngine;
    let off: LoadedEngine;
    before(async () => {
      const port = await goldenPort(name);
      on = createEngineFromPort(port, { ...threads, runtime });
      off = createEngineFromPort(port, { ...threads, runtime, prefixCacheBytes: 0 });
      await Promise.all([on.ready(), off.ready()]);
    });
    after(async () => {
      await Promise.all([on?.close(), off?.close()]);
    });

    test('every golden case, twice: the reference tokens with the cache on and off; the repeat loads its prompt', async () => {
      for (const c of golden.cases) {
        const req = request(caseMessages(c));
        const [first, offRun] = await both(on, off, req);
        const again = await run(on, req);
        for (const o of [first, again, offRun]) assert.deepEqual(o.ids, c.greedy_ids, c.name);
        assert.equal(offRun.cached, 0);
        // every full block before the prompt's last position was stored by the first run
        assert.equal(again.cached, floorBlock(c.input_length - 1), `${c.name}: cached positions of ${c.input_length}`);
      }
      assert.equal(off.stats().prefixCache, undefined, 'off: no prefix cache stats');
      const stats = on.stats().prefixCache!;
      assert.ok(stats.hits > 0 && stats.hits < stats.queries && stats.bytes > 0, JSON.stringify(stats));
    });

    test('a multi-turn conversation: every turn the same, turn 2 and 3 load turn 1 at least up to its image', async () => {
      const questions = ['And what else is there?', 'Tell me more.'];
      const answers: string[] = [];
      for (let turn = 0; turn < 3; turn++) {
        const req = request(conversation(withImage, answers, questions), { maxTokens: 12 });
        const [o, offTurn] = await both(on, off, req);
        assert.deepEqual(o.ids, offTurn.ids, `turn ${turn + 1}`);
        assert.equal(o.text, offTurn.text);
        if (turn > 0) assert.ok(o.cached >= floorBlock(imageEnd), `turn ${turn + 1}: ${o.cached} cached of ${o.prompt}`);
        answers.push(o.text);
      }
    });

    test('another question about the same image shares the prefix up to it; the same text with another image does not', async () => {
      const question = (content: ContentPart[], text: string): GenerationRequest =>
        request([{ role: 'user', content: [...content, { type: 'text', text }] }], { maxTokens: 8 });
      const photo = image('photo-640x480.jpg');
      await run(on, question(photo, 'What are these?'));
      const [partial, partialOff] = await both(on, off, question(photo, 'Which colours do you see here?'));
      assert.deepEqual(partial.ids, partialOff.ids);
      assert.ok(partial.cached >= floorBlock(imageEnd) && partial.cached < partial.prompt, `${partial.cached} of ${partial.prompt}`);
      // the same words about other pixels (an image no golden case uses): only the blocks before the image can match
      const [other, otherOff] = await both(on, off, question(image('photo-320x240.webp'), 'What are these?'));
      assert.deepEqual(other.ids, otherOff.ids);
      const imageStart = withImage.image_spans[0]?.[0] ?? 0;
      assert.ok(other.cached <= floorBlock(imageStart), `${other.cached} cached, the image starts at ${imageStart}`);
    });

    test('concurrent conversations and a seeded sampler: the same tokens with the cache on and off', async () => {
      const cases = golden.cases.slice(0, 4);
      const sampling = { ...request([]).sampling, temperature: 0.9, topP: 0.95, topK: 40, seed: 77 };
      const turns = async (engine: LoadedEngine): Promise<number[][]> => {
        const firsts = await Promise.all(cases.map((c, i) => run(engine, request(caseMessages(c), { maxTokens: 8, sampling: { ...sampling, seed: i } }))));
        const seconds = await Promise.all(
          cases.map((c, i) => run(engine, request(conversation(c, [firsts[i].text], ['Why?']), { maxTokens: 8, sampling: { ...sampling, seed: i } }))),
        );
        return [...firsts, ...seconds].map((o) => o.ids);
      };
      const [withCache, without] = [await turns(on), await turns(off)];
      assert.deepEqual(withCache, without);
    });
  });
}
