// `npm run bench -- --model DIR --multi-turn`: what the prefix cache buys a chat about a picture.
//
// Each stream holds a conversation of `turns` turns about an image of its own (turn k+1 sends
// turn k's messages, its answer and a new question), at each concurrency, against a server with
// the prefix cache on (PREFIX_CACHE_SIZE auto) and one with it off (0), same runtime and
// settings. Reported per turn: time to first token (median over the streams), prompt positions
// and those taken from the cache; per level: inter-token latency (the cache must not slow
// decoding). The image embedding cache is on in both servers, as by default: turn 2+ skip the
// vision encoder either way, so the difference is the prefill of the repeated prefix.
//
// Every conversation gets distinct pixels (the base image with its first pixel set to the
// conversation's number, as PNG), so no turn 1 finds another stream's image in either cache.

import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { ServerProcess } from './server-process.js';
import { median, percentile, round } from './stats.js';
import { streamChat, type StreamResult } from './stream-client.js';

export interface MultiTurnOptions {
  model: string;
  image: string;
  concurrency: number[];
  turns: number;
  outputTokens: number;
  /** The first question; the later ones are fixed follow-ups. */
  prompt: string;
  /** Server environment both servers share (runtime, threads...). */
  env: Record<string, string>;
}

const FOLLOW_UPS = ['What colours stand out in it?', 'Is there any text or writing in it?', 'Summarise what you said in one sentence.', 'Anything else?'];

export interface TurnResult {
  turn: number;
  ttftP50: number;
  ttftMax: number;
  promptTokens: number; // mean over the streams
  cachedTokens: number; // mean over the streams
  /** Inter-token latency within this turn's answers: a cache hit must not slow decoding. */
  itlP50: number;
}

export interface MultiTurnLevel {
  concurrency: number;
  failed: number;
  wallSeconds: number;
  turns: TurnResult[];
  itlP50: number;
  itlP95: number;
}

export interface MultiTurnReport {
  prefixCache: { on: MultiTurnLevel[]; off: MultiTurnLevel[] };
  /** Per level and turn: TTFT with the cache over without, and over turn 1's with it. */
  comparison: { concurrency: number; turn: number; onOverOff: number; onOverTurn1: number }[];
  /** The issue's targets: turn 2+ TTFT <= 10% of turn 1's at concurrency 1, <= 20% at 4 (cache on). */
  targets: { concurrency: number; limit: number; worst: number; met: boolean }[];
}

type Message = { role: 'user' | 'assistant'; content: string | unknown[] };

/** A PNG of the base image whose first pixel encodes `n`: distinct pixels per conversation. */
async function distinctImage(base: { data: Buffer; width: number; height: number; channels: 1 | 2 | 3 | 4 }, n: number): Promise<string> {
  const data = Buffer.from(base.data);
  data[0] = n & 255;
  data[1] = (n >> 8) & 255;
  data[2] = 255 - (n & 255);
  const png = await sharp(data, { raw: { width: base.width, height: base.height, channels: base.channels } }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

/** One conversation, turn after turn; returns each turn's stream result. */
async function conversation(baseUrl: string, o: MultiTurnOptions, imageUrl: string): Promise<StreamResult[]> {
  const messages: Message[] = [
    {
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url: imageUrl } },
        { type: 'text', text: o.prompt },
      ],
    },
  ];
  const out: StreamResult[] = [];
  for (let turn = 0; turn < o.turns; turn++) {
    const r = await streamChat(baseUrl, { messages, max_tokens: o.outputTokens, temperature: 0, ignore_eos: true });
    out.push(r);
    if (!r.ok) break;
    messages.push({ role: 'assistant', content: r.text }, { role: 'user', content: FOLLOW_UPS[turn % FOLLOW_UPS.length] });
  }
  return out;
}

async function runServer(o: MultiTurnOptions, prefixCache: boolean, images: () => Promise<string>): Promise<MultiTurnLevel[]> {
  const env = { ...o.env, MAX_BATCH_SIZE: String(Math.max(...o.concurrency)), MAX_WAITING: '256', PREFIX_CACHE_SIZE: prefixCache ? 'auto' : '0' };
  const server = await ServerProcess.start(o.model, env);
  const label = `multi-turn prefix cache ${prefixCache ? 'on' : 'off'}`;
  try {
    await conversation(server.baseUrl, { ...o, turns: 2 }, await images()); // warm-up: both kinds of turn
    const levels: MultiTurnLevel[] = [];
    for (const c of o.concurrency) {
      const urls = await Promise.all(Array.from({ length: c }, images));
      const t0 = performance.now();
      const streams = await Promise.all(urls.map((url) => conversation(server.baseUrl, o, url)));
      const wall = (performance.now() - t0) / 1000;
      const all = streams.flat();
      const ok = all.filter((r) => r.ok);
      const turns: TurnResult[] = [];
      for (let t = 0; t < o.turns; t++) {
        const at = streams.map((s) => s[t]).filter((r): r is StreamResult => r !== undefined && r.ok);
        const mean = (f: (r: StreamResult) => number): number => round(at.reduce((sum, r) => sum + f(r), 0) / Math.max(1, at.length));
        turns.push({
          turn: t + 1,
          ttftP50: round(median(at.map((r) => r.ttft))),
          ttftMax: round(Math.max(...at.map((r) => r.ttft))),
          promptTokens: mean((r) => r.promptTokens),
          cachedTokens: mean((r) => r.cachedTokens),
          itlP50: round(percentile(at.flatMap((r) => r.itl), 50)),
        });
      }
      const itl = ok.flatMap((r) => r.itl);
      const level = { concurrency: c, failed: all.length - ok.length, wallSeconds: round(wall), turns, itlP50: round(percentile(itl, 50)), itlP95: round(percentile(itl, 95)) };
      const failed = all.find((r) => !r.ok);
      if (failed) console.error(`${label} c=${c}: ${level.failed} failed, e.g. ${failed.status} ${failed.error}`);
      console.error(`${label} c=${c}: TTFT per turn ${turns.map((t) => t.ttftP50).join(', ')} s; cached ${turns.map((t) => t.cachedTokens).join(', ')}`);
      levels.push(level);
    }
    return levels;
  } finally {
    await server.stop();
  }
}

export async function multiTurnComparison(o: MultiTurnOptions): Promise<MultiTurnReport> {
  const { data, info } = await sharp(o.image).raw().toBuffer({ resolveWithObject: true });
  const base = { data, width: info.width, height: info.height, channels: info.channels };
  let n = 0;
  const images = (): Promise<string> => distinctImage(base, ++n);
  const on = await runServer(o, true, images);
  const off = await runServer(o, false, images);
  const comparison = on.flatMap((level, i) =>
    level.turns.map((t) => ({
      concurrency: level.concurrency,
      turn: t.turn,
      onOverOff: round(t.ttftP50 / off[i].turns[t.turn - 1].ttftP50),
      onOverTurn1: round(t.ttftP50 / level.turns[0].ttftP50),
    })),
  );
  const targets = on
    .filter((l) => l.concurrency === 1 || l.concurrency === 4)
    .map((l) => {
      const limit = l.concurrency === 1 ? 0.1 : 0.2;
      const worst = Math.max(...comparison.filter((x) => x.concurrency === l.concurrency && x.turn > 1).map((x) => x.onOverTurn1));
      return { concurrency: l.concurrency, limit, worst, met: worst <= limit };
    });
  return { prefixCache: { on, off }, comparison, targets };
}

export function multiTurnMarkdown(model: string, date: string, machine: string, o: MultiTurnOptions, r: MultiTurnReport): string {
  const lines = [
    `# Multi-turn conversations with and without the prefix cache: ${model}`,
    '',
    `${date}, ${machine}. Each stream: a ${o.turns}-turn conversation about an image of its own ` +
      `(the base image with distinct pixels), ${o.outputTokens} output tokens per turn (ignore_eos), greedy; ` +
      `image cache on in both servers. TTFT: median over the streams.`,
    '',
    '| concurrency | turn | prompt positions | cached positions (on) | TTFT off (s) | TTFT on (s) | on / off | on: turn / turn 1 | ITL p50 off (s) | ITL p50 on (s) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  r.prefixCache.on.forEach((level, i) => {
    for (const t of level.turns) {
      const off = r.prefixCache.off[i].turns[t.turn - 1];
      const x = r.comparison.find((c) => c.concurrency === level.concurrency && c.turn === t.turn)!;
      lines.push(
        `| ${level.concurrency} | ${t.turn} | ${t.promptTokens} | ${t.cachedTokens} | ${off.ttftP50} | ${t.ttftP50} | ${x.onOverOff} | ${x.onOverTurn1} | ` +
          `${off.itlP50} | ${t.itlP50} |`,
      );
    }
  });
  lines.push('', '| concurrency | ITL p50 off (s) | ITL p50 on (s) | ITL p95 off (s) | ITL p95 on (s) | failed (on, off) |', '|---|---|---|---|---|---|');
  r.prefixCache.on.forEach((level, i) => {
    const off = r.prefixCache.off[i];
    lines.push(`| ${level.concurrency} | ${off.itlP50} | ${level.itlP50} | ${off.itlP95} | ${level.itlP95} | ${level.failed}, ${off.failed} |`);
  });
  lines.push(
    '',
    'Targets (cache on, every turn after the first): ' +
      r.targets.map((t) => `c=${t.concurrency}: worst ${Math.round(t.worst * 100)}% of turn 1 (limit ${t.limit * 100}%) ${t.met ? 'met' : 'NOT met'}`).join('; ') +
      '.',
    '',
  );
  return lines.join('\n');
}
