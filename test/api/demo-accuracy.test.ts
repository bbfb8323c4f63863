// The bundled demo model (models/tinyllava-demo, trained by `npm run train-demo`) really answers:
// held-out synthetic images, drawn now from a seed the training never used, and their questions
// sent through POST /v1/chat/completions to `npm start`'s server, greedy, exact answers.
//
// Issue #15 asks for 95% overall; the committed model answers 98.5% of 400 held-out questions,
// yes/no 49/50 (docs/demo-model.md). Each kind must also stay at 90% or more on its own, so that
// one kind falling to chance cannot hide behind the others.

import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ask, askAll, heldOutSet, repoRoot, score, SERVER_ENV, type HeldOutSet } from '../../bench/demo-accuracy.js';
import { ServerProcess } from '../../bench/server-process.js';

const DEMO = join(repoRoot, 'models/tinyllava-demo');

describe('the demo model through HTTP', () => {
  let server: ServerProcess;
  let set: HeldOutSet;

  before(async () => {
    set = heldOutSet(undefined, 160);
    server = await ServerProcess.start(DEMO, SERVER_ENV);
  });
  after(async () => {
    await server?.stop();
    if (set) rmSync(set.dir, { recursive: true, force: true });
  });

  let answers: string[];
  const scored = async () => score(set.items, (answers ??= await askAll(server.baseUrl, set)));

  test('answers at least 95% of the held-out questions exactly, and at least 90% of each kind (fp32, greedy)', async () => {
    const s = await scored();
    const detail = JSON.stringify({ perKind: s.perKind, wrong: s.wrong.slice(0, 10) });
    assert.equal(Object.keys(s.perKind).length, 8, detail); // every kind of question was asked
    assert.ok(s.accuracy >= 0.95, `accuracy ${s.correct}/${s.total}: ${detail}`);
    for (const [kind, k] of Object.entries(s.perKind)) assert.ok(k.correct / k.total >= 0.9, `${kind}: ${detail}`);
  });

  test('the image steers the answer: the same question about different images gets their answers', async () => {
    const colours = set.items.filter((i) => i.kind === 'colour');
    const answers = await Promise.all(colours.map((i) => ask(server.baseUrl, join(set.dir, i.image), i.question)));
    assert.ok(new Set(answers).size >= 5, `distinct colour answers: ${[...new Set(answers)].join(', ')}`);
  });

  test('the bundled example image gets the answers the README shows', async () => {
    const examples = JSON.parse(readFileSync(join(DEMO, 'examples/examples.json'), 'utf8')) as {
      image: string;
      question: string;
      answer: string;
    }[];
    assert.ok(examples.length > 0);
    for (const e of examples) assert.equal(await ask(server.baseUrl, join(DEMO, 'examples', e.image), e.question), e.answer, e.question);
  });
});
