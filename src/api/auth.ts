// Optional API keys on /v1/*, /tokenize and /detokenize (the routes that do work for a client):
// `Authorization: Bearer <key>`, checked in onRequest so that an unauthenticated body is never read. Keys are compared as SHA-256 digests with timingSafeEqual,
// so neither the length nor the content of a key leaks through timing.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

const PROTECTED_ROUTES = new Set(['/tokenize', '/detokenize']);

/** An onRequest check, or null when no keys are configured. */
export function bearerAuth(keys: readonly string[]): ((request: FastifyRequest) => void) | null {
  if (keys.length === 0) return null;
  const known = keys.map(digest);
  return (request) => {
    // The matched route's pattern when there is one, so that no spelling of a path slips past.
    const route = request.routeOptions.url ?? request.url;
    if (!route.startsWith('/v1/') && !PROTECTED_ROUTES.has(route)) return;
    const header = request.headers.authorization;
    const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      throw new ApiError('invalid_api_key', 'this server needs an API key: send "Authorization: Bearer <key>"');
    }
    const given = digest(match[1]);
    // Compare against every key, so that the time does not depend on which one matched.
    let ok = false;
    for (const k of known) ok = timingSafeEqual(k, given) || ok;
    if (!ok) throw new ApiError('invalid_api_key', 'the API key is not valid');
  };
}
