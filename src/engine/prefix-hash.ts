// The prefix cache's keys (src/runtime/prefix-cache.ts): chain hashes over a prompt's
// positions, one per full block, as vLLM's automatic prefix caching hashes its blocks:
//
//   key(0) = H(root, positions of block 0),  key(i) = H(key(i-1), positions of block i)
//
// so one key stands for everything before its block's end, and two prompts share key(i) only
// when their first (i+1) blocks are the same positions.
//
// Positions, not prompt ids: an image is one IMAGE_MARKER in the ids but N feature positions in
// the decoder, each keyed by the image's content key (src/engine/image-key.ts: SHA-256 of the
// decoded pixels and the vision settings) and its index. Two different images therefore never
// share a key and the same pixels do, whatever file or request they came in. An image without
// a content key ends the keyed positions: nothing from it on can be cached.

import { createHash } from 'node:crypto';
import { IMAGE_MARKER } from './model-port.js';

/** One position's identity: `t<id>` for a token, `i<content key>.<k>` for an image's feature k. */
export type PositionKey = string;

/**
 * The position keys of a prompt: `ids` with one IMAGE_MARKER per image, `imageKeys` the images'
 * content keys in marker order (absent: unknown). Stops before the first image without a key.
 */
export function promptPositionKeys(ids: readonly number[], imageKeys: readonly string[] | undefined, numImageTokens: number): PositionKey[] {
  const keys: PositionKey[] = [];
  let image = 0;
  for (const id of ids) {
    if (id !== IMAGE_MARKER) {
      keys.push(tokenKey(id));
      continue;
    }
    const content = imageKeys?.[image++];
    if (content === undefined) break;
    for (let k = 0; k < numImageTokens; k++) keys.push(`i${content}.${k}`);
  }
  return keys;
}

export function tokenKey(id: number): PositionKey {
  return `t${id}`;
}

/**
 * The chain keys of the full blocks of `positions` (a last partial block has none). `parent`:
 * the key of the block before `positions[0]`, to continue a chain ('' at a prompt's start).
 */
export function blockKeys(positions: readonly PositionKey[], blockPositions: number, parent = ''): string[] {
  const keys: string[] = [];
  for (let end = blockPositions; end <= positions.length; end += blockPositions) {
    const hash = createHash('sha256');
    hash.update(parent);
    hash.update('|');
    hash.update(positions.slice(end - blockPositions, end).join(','));
    parent = hash.digest('base64url');
    keys.push(parent);
  }
  return keys;
}
