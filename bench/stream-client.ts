// One streaming chat request, timed token by token.
//
// Tokens are counted from `logprobs.content` (one entry per generated token, even when the
// text of a token is held back, e.g. half a UTF-8 character), so time to first token and
// inter-token latency are measured per token, not per text chunk.

import { performance } from 'node:perf_hooks';

export interface StreamResult {
  ok: boolean;
  status: number;
  error?: string;
  ttft: number; // seconds from sending to the first token
  itl: number[]; // seconds between consecutive tokens
  tokenTimes: number[]; // arrival of each token, seconds on performance.now()'s clock
  tokens: number; // completion tokens (usage)
  promptTokens: number;
  cachedTokens: number; // usage.prompt_tokens_details.cached_tokens: prompt positions from the prefix cache
  text: string; // the answer, for the next turn of a conversation
  total: number; // seconds from sending to [DONE]
}

export interface ChatBody {
  model?: string;
  messages: unknown[];
  max_tokens: number;
  temperature?: number;
  ignore_eos?: boolean;
}

export async function streamChat(baseUrl: string, body: ChatBody): Promise<StreamResult> {
  const t0 = performance.now();
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true }, logprobs: true }),
  });
  const result: StreamResult = {
    ok: res.ok,
    status: res.status,
    ttft: NaN,
    itl: [],
    tokenTimes: [],
    tokens: 0,
    promptTokens: 0,
    cachedTokens: 0,
    text: '',
    total: NaN,
  };
  if (!res.ok || !res.body) {
    result.error = await res.text();
    return result;
  }
  const decoder = new TextDecoder();
  let buffer = '';
  let last = NaN;
  let seen = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    const now = performance.now();
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (!data || data === '[DONE]') continue;
      const msg = JSON.parse(data);
      if (msg.error) {
        result.ok = false;
        result.error = msg.error.message;
        continue;
      }
      if (msg.usage) {
        result.tokens = msg.usage.completion_tokens;
        result.promptTokens = msg.usage.prompt_tokens;
        result.cachedTokens = msg.usage.prompt_tokens_details?.cached_tokens ?? 0;
      }
      result.text += msg.choices?.[0]?.delta?.content ?? '';
      const n = msg.choices?.[0]?.logprobs?.content?.length ?? 0;
      for (let i = 0; i < n; i++) {
        // Several tokens in one network read arrived together: the gap belongs to the first.
        if (seen === 0) result.ttft = (now - t0) / 1000;
        else result.itl.push(i === 0 ? (now - last) / 1000 : 0);
        result.tokenTimes.push(now / 1000);
        seen++;
      }
      if (n > 0) last = now;
    }
  }
  result.total = (performance.now() - t0) / 1000;
  if (result.ok && result.tokens === 0) result.tokens = seen;
  return result;
}
