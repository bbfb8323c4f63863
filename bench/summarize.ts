// `npm run bench:summary -- REPORT.json...`: the decode-rate figures of several benchmark runs of
// one package side by side, with their medians. These machines are noisy (memory bandwidth
// swings between runs), so a target is judged on the median of repeated runs, and each ratio
// is taken within one run before the median is taken.

import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { median, round } from './stats.js';

interface Report {
  model: string;
  batched: { concurrency: number; steadyDecodeTokensPerSecond: number | null }[];
  engineAlone: { decodeTokensPerSecond: number; batch: number; batchSteadyDecodeTokensPerSecond: number | null };
  httpSingleStreamDecode: number | null;
}

/** One run's figures; null where the run did not measure it. */
export function figures(r: Report): Record<string, number | null> {
  const e = r.engineAlone;
  const top = Math.max(...r.batched.map((l) => l.concurrency));
  const httpTop = r.batched.find((l) => l.concurrency === top)?.steadyDecodeTokensPerSecond ?? null;
  const httpOne = r.httpSingleStreamDecode;
  const ratio = (a: number | null, b: number | null): number | null => (a !== null && b !== null && b > 0 ? round(a / b) : null);
  return {
    'engine c=1 tok/s': e.decodeTokensPerSecond,
    [`engine c=${e.batch} tok/s`]: e.batchSteadyDecodeTokensPerSecond,
    [`engine c=${e.batch} / c=1`]: ratio(e.batchSteadyDecodeTokensPerSecond, e.decodeTokensPerSecond),
    'HTTP c=1 tok/s': httpOne,
    'HTTP c=1 / engine': ratio(httpOne, e.decodeTokensPerSecond),
    [`HTTP c=${top} tok/s`]: httpTop,
    [`HTTP c=${top} / c=1`]: ratio(httpTop, httpOne),
  };
}

export function summaryTable(names: string[], reports: Report[]): string {
  const rows = reports.map(figures);
  const columns = Object.keys(rows[0]);
  const cell = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : String(x));
  const lines = [`| run | ${columns.join(' | ')} |`, `|---|${columns.map(() => '---|').join('')}`];
  rows.forEach((row, i) => lines.push(`| ${names[i]} | ${columns.map((c) => cell(row[c])).join(' | ')} |`));
  const medians = columns.map((c) => {
    const xs = rows.map((r) => r[c]).filter((x): x is number => x !== null && x !== undefined);
    return xs.length > 0 ? round(median(xs)) : null;
  });
  lines.push(`| **median** | ${medians.map((m) => `**${cell(m)}**`).join(' | ')} |`);
  return lines.join('\n');
}

function main(files: string[]): void {
  if (files.length === 0) {
    console.error('usage: npm run bench:summary -- REPORT.json [REPORT.json...]');
    process.exit(2);
  }
  const reports = files.map((f) => JSON.parse(readFileSync(f, 'utf8')) as Report);
  const models = new Set(reports.map((r) => r.model));
  if (models.size > 1) console.error(`warning: the reports are of different packages: ${[...models].join(', ')}`);
  console.log(`${[...models].join(', ')}: ${reports.length} runs\n`);
  console.log(summaryTable(files.map((f) => basename(f, '.json')), reports));
}

if (process.argv[1]?.endsWith('summarize.js')) main(process.argv.slice(2));
