// The image cache and the encode batcher without ONNX Runtime: LRU eviction by bytes, content
// keys that never mix two images, hits that skip the encoder, the cache off at 0, and images of
// concurrent requests sharing encoder calls with the same results as one call each.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RgbImage } from '../../src/model/index.js';
import type { EncodedImages } from '../../src/runtime/model-runner.js';
import { ImageBatcher, type ImageEncoder } from '../../src/engine/image-batcher.js';
import { ImageCache } from '../../src/engine/image-cache.js';
import { ImageEmbedder } from '../../src/engine/image-embedder.js';
import { imageKey, imageKeyNamespace } from '../../src/engine/image-key.js';

const N = 3; // image tokens
const D = 4; // hidden size

/** An image whose pixels are a function of `seed`. */
function image(seed: number, width = 8, height = 6): RgbImage {
  return { width, height, data: Uint8Array.from({ length: width * height * 3 }, (_, i) => (i * 7 + seed * 31) & 255) };
}

/** A deterministic stand-in for vision_encoder + connector: each image's N x D values from its pixels. */
function embeddingOf(img: RgbImage): Float32Array {
  let sum = img.width * 1000 + img.height;
  for (const v of img.data) sum = (sum * 31 + v) % 1_000_003;
  return Float32Array.from({ length: N * D }, (_, k) => Math.sin(sum + k));
}

class FakeEncoder implements ImageEncoder {
  calls: number[] = []; // images per call
  delayMs = 5;
  fail: Error | null = null;
  async encodeImages(images: RgbImage[]): Promise<EncodedImages> {
    this.calls.push(images.length);
    const out = new Float32Array(images.length * N * D);
    images.forEach((img, i) => out.set(embeddingOf(img), i * N * D));
    // Like the worker: the pixels were transferred, the caller's view is detached.
    for (const img of images) img.data = new Uint8Array(0);
    await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.fail) throw this.fail;
    return { embeds: { type: 'float32', data: out, dims: [images.length, N, D] }, preprocessSeconds: 0.001, visionSeconds: 0.002 };
  }
}

const namespace = imageKeyNamespace({ preprocessing: { size: 4 } });
const entryBytes = N * D * 4;

test('LRU by bytes: the least recently used entries go first, a read counts as a use', () => {
  const cache = new ImageCache(3 * 100);
  const v = (): Float32Array => new Float32Array(25); // 100 bytes
  cache.set('a', v());
  cache.set('b', v());
  cache.set('c', v());
  assert.deepEqual(cache.usage(), { bytes: 300, entries: 3 });
  assert.ok(cache.get('a')); // a is now the most recent
  cache.set('d', v()); // evicts b, the least recently used
  assert.deepEqual(cache.keys(), ['c', 'a', 'd']);
  cache.set('e', new Float32Array(50)); // 200 bytes: evicts c and a
  assert.deepEqual(cache.keys(), ['d', 'e']);
  assert.deepEqual(cache.usage(), { bytes: 300, entries: 2 });
  cache.set('huge', new Float32Array(100)); // larger than the cache: not stored, nothing evicted
  assert.deepEqual(cache.keys(), ['d', 'e']);
  cache.set('d', new Float32Array(10)); // replacing an entry counts its new size
  assert.deepEqual(cache.usage(), { bytes: 240, entries: 2 });
});

test('keys: content, not identity; the size and the namespace are part of the key', async () => {
  const a = image(1);
  const sameAsA = image(1); // another buffer, the same pixels
  const b = image(2); // same size, other pixels
  assert.equal(await imageKey(namespace, a), await imageKey(namespace, sameAsA));
  assert.notEqual(await imageKey(namespace, a), await imageKey(namespace, b));
  // one pixel differs in one channel
  const c = image(1);
  c.data[c.data.length - 1] ^= 1;
  assert.notEqual(await imageKey(namespace, a), await imageKey(namespace, c));
  // the same bytes read as 8x6 and as 6x8
  assert.notEqual(await imageKey(namespace, a), await imageKey(namespace, { ...a, width: 6, height: 8 }));
  // other preprocessing settings, whatever the key order
  assert.notEqual(await imageKey(namespace, a), await imageKey(imageKeyNamespace({ preprocessing: { size: 5 } }), a));
  assert.equal(imageKeyNamespace({ x: 1, y: [1, { b: 2, a: 1 }] }), imageKeyNamespace({ y: [1, { a: 1, b: 2 }], x: 1 }));
  // large images are hashed in slices: same key as if hashed at once
  const big = image(3, 2000, 1500); // 9 MB
  assert.equal(await imageKey(namespace, big), await imageKey(namespace, { ...big, data: new Uint8Array(big.data) }));
});

test('a hit skips the encoder and returns the same embeddings', async () => {
  const encoder = new FakeEncoder();
  const embedder = new ImageEmbedder(encoder, { cacheBytes: 1 << 20, maxBatchImages: 8, namespace });
  const first = await embedder.embedImages([image(1)]);
  assert.deepEqual(encoder.calls, [1]);
  assert.ok(first.visionSeconds > 0);
  const again = await embedder.embedImages([image(1)]);
  assert.deepEqual(encoder.calls, [1], 'no second encoder call');
  assert.deepEqual(again.embeds[0], embeddingOf(image(1)));
  assert.equal(again.visionSeconds, 0);
  assert.deepEqual(embedder.cacheStats(), { hits: 1, misses: 1, bytes: entryBytes, entries: 1 });
});

test('two different images of the same size never share an entry', async () => {
  const encoder = new FakeEncoder();
  const embedder = new ImageEmbedder(encoder, { cacheBytes: 1 << 20, maxBatchImages: 8, namespace });
  const [a, b] = await Promise.all([embedder.embedImages([image(1)]), embedder.embedImages([image(2)])]);
  assert.notDeepEqual(a.embeds[0], b.embeds[0]);
  assert.deepEqual(a.embeds[0], embeddingOf(image(1)));
  assert.deepEqual(b.embeds[0], embeddingOf(image(2)));
  const [a2, b2] = await Promise.all([embedder.embedImages([image(1)]), embedder.embedImages([image(2)])]);
  assert.deepEqual(a2.embeds[0], embeddingOf(image(1)));
  assert.deepEqual(b2.embeds[0], embeddingOf(image(2)));
  assert.deepEqual(embedder.cacheStats(), { hits: 2, misses: 2, bytes: 2 * entryBytes, entries: 2 });
});

test('eviction by bytes in LRU order, through the embedder', async () => {
  const encoder = new FakeEncoder();
  const embedder = new ImageEmbedder(encoder, { cacheBytes: 2 * entryBytes, maxBatchImages: 8, namespace });
  await embedder.embedImages([image(1)]);
  await embedder.embedImages([image(2)]);
  await embedder.embedImages([image(1)]); // hit: 1 becomes the most recent
  await embedder.embedImages([image(3)]); // evicts 2
  assert.deepEqual(embedder.cacheStats(), { hits: 1, misses: 3, bytes: 2 * entryBytes, entries: 2 });
  encoder.calls = [];
  await embedder.embedImages([image(1)]);
  await embedder.embedImages([image(3)]);
  assert.deepEqual(encoder.calls, [], '1 and 3 are cached');
  await embedder.embedImages([image(2)]);
  assert.deepEqual(encoder.calls, [1], '2 was evicted');
});

test('off at 0 bytes: every image goes to the encoder, nothing is counted', async () => {
  const encoder = new FakeEncoder();
  const embedder = new ImageEmbedder(encoder, { cacheBytes: 0, maxBatchImages: 8, namespace });
  await embedder.embedImages([image(1)]);
  const again = await embedder.embedImages([image(1)]);
  assert.deepEqual(encoder.calls, [1, 1]);
  assert.deepEqual(again.embeds[0], embeddingOf(image(1)));
  assert.equal(embedder.cacheStats(), null);
  assert.equal(again.keys, undefined, 'nothing hashed');
});

test('content keys for the prefix cache: returned in order, also with the cache off (keyImages)', async () => {
  const want = await Promise.all([image(1), image(2)].map((img) => imageKey(namespace, img)));
  for (const cacheBytes of [0, 1 << 20]) {
    const embedder = new ImageEmbedder(new FakeEncoder(), { cacheBytes, maxBatchImages: 8, namespace, keyImages: true });
    assert.deepEqual((await embedder.embedImages([image(1), image(2)])).keys, want, `cache ${cacheBytes}`);
    assert.deepEqual((await embedder.embedImages([image(2)])).keys, [want[1]]);
  }
});

test('concurrent requests for one image share one encode', async () => {
  const encoder = new FakeEncoder();
  const embedder = new ImageEmbedder(encoder, { cacheBytes: 1 << 20, maxBatchImages: 8, namespace });
  const results = await Promise.all([1, 2, 3].map(() => embedder.embedImages([image(7)])));
  assert.deepEqual(encoder.calls, [1]);
  for (const r of results) assert.deepEqual(r.embeds[0], embeddingOf(image(7)));
  assert.deepEqual(embedder.cacheStats(), { hits: 2, misses: 1, bytes: entryBytes, entries: 1 });
});

test('an encoder failure fails the requests of that batch, is not cached, and the next batch works', async () => {
  const encoder = new FakeEncoder();
  const embedder = new ImageEmbedder(encoder, { cacheBytes: 1 << 20, maxBatchImages: 8, namespace });
  encoder.fail = new Error('boom');
  const failed = await Promise.allSettled([embedder.embedImages([image(1)]), embedder.embedImages([image(1)])]);
  assert.ok(failed.every((r) => r.status === 'rejected' && (r.reason as Error).message === 'boom'));
  encoder.fail = null;
  const ok = await embedder.embedImages([image(1)]);
  assert.deepEqual(ok.embeds[0], embeddingOf(image(1)));
  assert.deepEqual(encoder.calls, [1, 1]);
});

test('images of requests arriving together are encoded in fewer calls, with the same results', async () => {
  const encoder = new FakeEncoder();
  const batcher = new ImageBatcher(encoder, 4);
  // 10 requests, one image each, arriving a few milliseconds apart while encodes run
  const pending = [];
  for (let i = 0; i < 10; i++) {
    pending.push(batcher.encode(image(i)));
    if (i % 3 === 2) await new Promise((r) => setTimeout(r, 2));
  }
  const results = await Promise.all(pending);
  results.forEach((r, i) => assert.deepEqual(r.embeds, embeddingOf(image(i)), `image ${i}`));
  assert.ok(encoder.calls.length < 10, `${encoder.calls.length} calls for 10 images`);
  assert.ok(Math.max(...encoder.calls) <= 4, 'batches hold at most maxImages');
  assert.equal(encoder.calls.reduce((a, b) => a + b, 0), 10);
  assert.deepEqual(batcher.counters, { calls: encoder.calls.length, images: 10 });
  // each image has a buffer of its own (a cached one must not pin its whole batch)
  for (const r of results) assert.equal(r.embeds.byteLength, r.embeds.buffer.byteLength);
});
