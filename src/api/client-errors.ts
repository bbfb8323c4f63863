// Errors of HTTP itself, before any route runs (node's 'clientError'): a malformed request
// (Content-Length with Transfer-Encoding, a body longer than its Content-Length, whose rest
// reads as a broken next request), headers too large, or a request not received within
// HEADERS_TIMEOUT / BODY_TIMEOUT. Answered in the OpenAI envelope, counted, logged without the
// raw bytes node attaches to the error (`rawPacket`: they hold the Authorization header), then
// the connection is closed: after a framing error nothing more on it can be trusted.

import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';
import { ApiError, errorBody } from './errors.js';
import type { ApiMetrics } from './metrics.js';

/** Sockets closed here: their unfinished request is not the client's cancellation. */
export const closedByServer = new WeakSet<Socket>();

export function clientErrorHandler(
  metrics: () => ApiMetrics | null,
  log: () => FastifyBaseLogger | null,
): (err: Error & { code?: string; reason?: string }, socket: Socket) => void {
  return (err: Error & { code?: string; reason?: string }, socket: Socket): void => {
    // A reset connection, or one closed in the middle of its request (EOF while parsing), has
    // nobody left to answer: that is a cancellation (counted by the route), not an error.
    if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || socket.destroyed) {
      socket.destroy();
      return;
    }
    const e = toClientError(err);
    metrics()?.error(e.type, e.code);
    log()?.info({ code: e.code, httpParserCode: err.code }, e.message);
    closedByServer.add(socket);
    // Only when no response has started on this connection (a pipelined request may be mid-answer).
    const current = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
    if (socket.writable && !current?.headersSent) {
      const body = JSON.stringify(errorBody(e, ''));
      socket.write(
        `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy();
  };
}

function toClientError(err: Error & { code?: string; reason?: string }): ApiError {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError('request_timeout', 'the request was not received in time (HEADERS_TIMEOUT for the headers, BODY_TIMEOUT for all of it)');
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError('headers_too_large', 'the request headers are too large');
    default:
      // llhttp's reason ("Content-Length can't be present with Transfer-Encoding") names the
      // rule broken and quotes nothing of the request.
      return new ApiError('invalid_http_request', `malformed HTTP request: ${err.reason ?? err.message}`);
  }
}
