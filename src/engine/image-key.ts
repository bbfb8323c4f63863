// The image cache's key: SHA-256 over everything that decides an image's connector output.
//
// - the decoded RGB pixels and their width and height (the same bytes read as 2x3 or 3x2 are
//   different images), never the encoded file, the request or the prompt's placeholder ids: two
//   requests share an entry only when the encoder would see the same pixels;
// - a namespace naming the vision graphs and the preprocessing settings (resize, crop, mean,
//   std...), which the vision worker applies after this point.
//
// Hashing runs on the main thread, so large images are hashed in slices with a yield between
// them: a 40-megapixel image (120 MB) must not stall the event loop, and /health, for ~0.1 s.

import { createHash } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { RgbImage } from '../model/index.js';

const SLICE_BYTES = 8 << 20;

/** A namespace string for imageKey: what, besides the pixels, changes the embeddings. */
export function imageKeyNamespace(parts: Record<string, unknown>): string {
  return createHash('sha256').update(stableJson(parts)).digest('hex');
}

export async function imageKey(namespace: string, image: RgbImage): Promise<string> {
  const hash = createHash('sha256');
  hash.update(namespace);
  hash.update(new Uint8Array(Uint32Array.of(image.width, image.height).buffer));
  const { data } = image;
  for (let at = 0; at < data.length; at += SLICE_BYTES) {
    if (at > 0) await yieldToLoop();
    hash.update(data.subarray(at, Math.min(at + SLICE_BYTES, data.length)));
  }
  return hash.digest('hex');
}

/** JSON with object keys sorted, so that the namespace does not depend on key order. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
