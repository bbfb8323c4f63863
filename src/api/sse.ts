// Server-sent events framing, and nothing else: one `data:` line per event, a blank line after
// it. JSON.stringify escapes every line break, so an event is always exactly one line.

export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  // nginx buffers proxied responses unless told otherwise, which would hold tokens back.
  'x-accel-buffering': 'no',
} as const;

export function sseData(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

export const SSE_DONE = 'data: [DONE]\n\n';
