// A steady, bounded load of streaming image requests, as an OpenAI client sends them, that
// classifies every outcome: a stream that completes (its last events are a finish_reason and
// [DONE]), or a failure the client saw (a status other than 200, a connection error, an error
// event, a stream cut short). Nothing is retried here: the load balancer's retries are what is
// being tested.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../api/support/harness.js';

export interface LoadResult {
  sent: number;
  completed: number;
  failures: string[];
}

/**
 * A streamed image request of exactly `maxTokens` tokens: `ignore_eos`, because what the bundled
 * model answers to a photo is no caption (it can be one token, "No"), and a one-token stream
 * leaves the inter-token latency histogram without a series for the dashboard's queries.
 */
export function imageChatBody(image = 'photo-640x480.jpg', maxTokens = 8): string {
  const url = `data:image/jpeg;base64,${readFileSync(join(repoRoot, 'test/fixtures/images', image)).toString('base64')}`;
  return JSON.stringify({
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: 'What is in this picture?' }] }],
    stream: true,
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
  });
}

/** One streamed request; returns null when it completed, else what went wrong. */
export async function streamOnce(url: string, body: string): Promise<string | null> {
  let res: Response;
  try {
    res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  } catch (err) {
    return `connection: ${(err as Error).cause ?? (err as Error).message}`;
  }
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    return `status ${res.status}, body cut: ${(err as Error).message}`;
  }
  if (res.status !== 200) return `status ${res.status}: ${text.slice(0, 200)}`;
  const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  if (events.at(-1) !== '[DONE]') return `stream cut short after ${events.length} events`;
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { error?: { code: string }; choices?: { finish_reason: string | null }[] });
  const error = chunks.find((c) => c.error);
  if (error) return `error event: ${error.error!.code}`;
  if (!chunks.some((c) => c.choices?.[0]?.finish_reason)) return 'stream without a finish_reason';
  return null;
}

/** `concurrency` clients, each sending one request after another until `stop()` says so or `maxRequests` were sent. */
export async function runLoad(url: string, options: { concurrency: number; stop: () => boolean; maxRequests: number; body?: string; pauseMs?: number }): Promise<LoadResult> {
  const body = options.body ?? imageChatBody();
  const result: LoadResult = { sent: 0, completed: 0, failures: [] };
  const client = async (): Promise<void> => {
    while (!options.stop() && result.sent < options.maxRequests) {
      result.sent++;
      const failure = await streamOnce(url, body);
      if (failure === null) result.completed++;
      else result.failures.push(failure);
      if (options.pauseMs) await sleep(options.pauseMs);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, client));
  return result;
}
