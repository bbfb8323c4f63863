// GET /: the chat page, the plain static files of ui/ (index.html, chat.js, chat.css; no build
// step, nothing fetched from elsewhere). The page is a client of the API like any other: it
// reads GET /v1/models and streams POST /v1/chat/completions, so it is not in openapi.yaml and
// needs no API key to load (the key, when the server has one, is typed into the page). Off with
// --no-ui (UI=false), and GET / is then the 404 it always was.

import { existsSync, readdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

// ui/ at the repository root (this file runs as dist/src/api/routes/chat-page.js); tsc does not
// copy it, and the image's tools/deploy/runtime-files.sh does.
export const UI_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../ui');

// The page may load its own files and talk to this server; images are previewed as data: URLs.
// Nothing else: no inline script, no other origin, not framed by another site.
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The paths the page is served at: / and each file of ui/. */
export function chatPagePaths(): string[] {
  if (!existsSync(UI_DIR)) throw new Error(`the chat page's folder ${UI_DIR} is missing; start with --no-ui to serve without it`);
  return ['/', ...readdirSync(UI_DIR).map((f) => `/${f}`)];
}

/** Registers the page's routes; buildApp has checked with chatPagePaths() that ui/ is there. */
export async function chatPageRoute(app: FastifyInstance): Promise<void> {
  await app.register(fastifyStatic, {
    root: UI_DIR,
    prefix: '/',
    // One route per file, found now: the rest of the URL space stays with the API's 404 and 405.
    wildcard: false,
    index: 'index.html',
    dotfiles: 'ignore',
    // Small files that change with the server: revalidate (ETag) on every load.
    cacheControl: false,
    setHeaders: (reply) => {
      reply.header('cache-control', 'no-cache');
      reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
    },
  });
}
