// Server-sent events: the framing (one `data:` line per event, a blank line after it;
// JSON.stringify escapes every line break, so an event is always exactly one line), and the
// writer that sends a stream of frames as a 200 response.

import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyReply } from 'fastify';

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

/**
 * Sends `frames` as the response: the 200 head is written at once, then each frame as it comes,
 * waiting while the socket's buffer is full; a client that went away ends the loop, which
 * closes `frames` (and so the generation behind it).
 *
 * The response is taken over from fastify (hijack) on purpose: handed a stream, fastify writes
 * the head only with the first chunk, and a client gone in between made it report the stream's
 * "premature close" to the error handler as a 500 on a response already typed
 * text/event-stream. Here nothing can fail between the decision to answer 200 and the head.
 */
export async function writeEventStream(reply: FastifyReply, frames: AsyncIterable<string>): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  // 'close' may come before, between or after writes; res.destroyed does not always say so.
  let closed = res.destroyed;
  let wake: (() => void) | null = null;
  const onClose = (): void => {
    closed = true;
    wake?.();
  };
  res.once('close', onClose);
  try {
    res.writeHead(200, { ...reply.getHeaders(), ...SSE_HEADERS } as OutgoingHttpHeaders);
    for await (const frame of frames) {
      if (closed) break;
      if (!res.write(frame)) {
        // Wait for the socket to take more, or for the client to be gone.
        await new Promise<void>((resolve) => {
          const done = (): void => {
            res.off('drain', done);
            wake = null;
            resolve();
          };
          wake = done;
          res.once('drain', done);
          if (closed) done();
        });
      }
    }
  } finally {
    res.off('close', onClose);
    if (!closed) res.end();
  }
}
