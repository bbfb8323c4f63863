// The demo model's functional accuracy through HTTP: held-out synthetic images (drawn by
// tools/train_demo/synth.py from a seed the training never draws from) and their questions sent
// to POST /v1/chat/completions, greedy; an answer counts when it is exactly the known one.
//
// As a command (`npm run bench:demo-accuracy -- ...`) it scores several packages on the same set
// and writes a report with each one's accuracy and its greedy agreement with the first (fp32):
//   npm run bench:demo-accuracy -- --package fp32=models/tinyllava-demo --package int4=/tmp/demo-int4 \
//     --out bench/results/2026-12-02-demo

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ServerProcess } from './server-process.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The seed of the HTTP accuracy set: the training draws from its --seed (0) and seed + 1000 only. */
export const HELD_OUT_SEED = 20261202;

export interface Item {
  image: string; // file name in the set's directory
  question: string;
  answer: string;
  kind: string;
}

export interface HeldOutSet {
  dir: string;
  items: Item[];
}

/** Draws `count` held-out questions (one per image) with synth.py into a fresh directory. */
export function heldOutSet(seed = HELD_OUT_SEED, count = 160, dir = mkdtempSync(join(tmpdir(), 'demo-set-'))): HeldOutSet {
  const python = join(repoRoot, '.venv/bin/python');
  const r = spawnSync(python, [join(repoRoot, 'tools/train_demo/synth.py'), '--seed', String(seed), '--count', String(count), '--out', dir], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`synth.py failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr}`);
  return { dir, items: JSON.parse(readFileSync(join(dir, 'questions.json'), 'utf8')) as Item[] };
}

/** One greedy answer to a question about an image file, through the API. */
export async function ask(baseUrl: string, imagePath: string, question: string, maxTokens = 40): Promise<string> {
  const url = `data:image/png;base64,${readFileSync(imagePath).toString('base64')}`;
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: question }] }],
      temperature: 0,
      max_tokens: maxTokens,
    }),
  });
  const body = (await res.json()) as { choices?: { message: { content: string } }[]; error?: { message: string } };
  if (res.status !== 200 || !body.choices) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body)}`);
  return body.choices[0].message.content;
}

/** Every item's answer, `concurrency` requests in flight. */
export async function askAll(baseUrl: string, set: HeldOutSet, concurrency = 4): Promise<string[]> {
  const answers: string[] = new Array(set.items.length);
  let next = 0;
  const worker = async () => {
    while (next < set.items.length) {
      const i = next++;
      answers[i] = await ask(baseUrl, join(set.dir, set.items[i].image), set.items[i].question);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return answers;
}

export interface Score {
  correct: number;
  total: number;
  accuracy: number;
  perKind: Record<string, { correct: number; total: number }>;
  wrong: { image: string; question: string; answer: string; got: string }[];
}

export function score(items: Item[], answers: string[]): Score {
  const perKind: Score['perKind'] = {};
  const wrong: Score['wrong'] = [];
  let correct = 0;
  items.forEach((item, i) => {
    const k = (perKind[item.kind] ??= { correct: 0, total: 0 });
    k.total++;
    if (answers[i] === item.answer) {
      k.correct++;
      correct++;
    } else {
      wrong.push({ image: item.image, question: item.question, answer: item.answer, got: answers[i] });
    }
  });
  return { correct, total: items.length, accuracy: correct / items.length, perKind, wrong };
}

/** Fraction of answers identical to the reference answers (greedy agreement). */
export function agreement(answers: string[], reference: string[]): number {
  return answers.filter((a, i) => a === reference[i]).length / answers.length;
}

/** The server's environment for these runs: one thread each, so that runs compare. */
export const SERVER_ENV = { INTRA_OP_THREADS: '1', VISION_INTRA_OP_THREADS: '1' };

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      package: { type: 'string', multiple: true },
      seed: { type: 'string', default: String(HELD_OUT_SEED) },
      count: { type: 'string', default: '400' },
      out: { type: 'string' },
    },
  });
  const packages = (values.package ?? []).map((p) => {
    const [label, dir] = p.includes('=') ? [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)] : [p, p];
    return { label, dir: resolve(dir) };
  });
  if (packages.length === 0) throw new Error('give at least one --package LABEL=DIR (the first is the reference)');
  const set = heldOutSet(Number(values.seed), Number(values.count));
  const results: { label: string; dir: string; score: Score; agreement: number; seconds: number }[] = [];
  let reference: string[] | undefined;
  for (const p of packages) {
    const server = await ServerProcess.start(p.dir, SERVER_ENV);
    const t0 = Date.now();
    try {
      const answers = await askAll(server.baseUrl, set);
      reference ??= answers;
      const s = score(set.items, answers);
      results.push({ label: p.label, dir: p.dir, score: s, agreement: agreement(answers, reference), seconds: (Date.now() - t0) / 1000 });
      console.log(`${p.label}: accuracy ${s.correct}/${s.total} = ${s.accuracy.toFixed(4)}, agreement with ${packages[0].label} ${agreement(answers, reference).toFixed(4)}`);
    } finally {
      await server.stop();
    }
  }
  if (!values.out) return;
  mkdirSync(values.out, { recursive: true });
  const command = `npm run bench:demo-accuracy -- ${process.argv.slice(2).join(' ')}`;
  writeFileSync(join(values.out, 'accuracy.json'), JSON.stringify({ command, seed: Number(values.seed), count: set.items.length, results }, null, 1) + '\n');
  const kinds = Object.keys(results[0].score.perKind);
  const lines = [
    `# Demo model accuracy through HTTP (${new Date().toISOString().slice(0, 10)})`,
    '',
    `\`${command}\``,
    '',
    `${set.items.length} held-out questions (synth.py seed ${values.seed}, one per image, the kinds in turn), greedy, exact answers.`,
    `Agreement: the fraction of answers identical to ${packages[0].label}'s.`,
    '',
    `| package | accuracy | agreement with ${packages[0].label} | ${kinds.join(' | ')} |`,
    `|---|---|---|${kinds.map(() => '---').join('|')}|`,
    ...results.map(
      (r) =>
        `| ${r.label} | ${r.score.correct}/${r.score.total} = ${r.score.accuracy.toFixed(4)} | ${r.agreement.toFixed(4)} | ` +
        kinds.map((k) => `${r.score.perKind[k].correct}/${r.score.perKind[k].total}`).join(' | ') +
        ' |',
    ),
    '',
    ...results.flatMap((r) => [
      `Wrong answers of ${r.label} (first 10):`,
      '',
      ...r.score.wrong.slice(0, 10).map((w) => `- ${w.image} "${w.question}": expected "${w.answer}", got "${w.got}"`),
      '',
    ]),
  ];
  writeFileSync(join(values.out, 'accuracy.md'), lines.join('\n'));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
