// The prefix cache over each backend's KV cache (src/runtime/prefix-cache.ts), on the tiny
// decoders of test/fixtures/shared-kv/: a stored prefix loaded into a new sequence continues
// exactly as a full prefill, lookups take the longest run of keys from the first block, the byte
// bound evicts least recently used blocks (a chain's tail before its head), and stored blocks
// give way to admission so that they never refuse a reservation an empty cache would take.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RuntimeBackend } from '../../src/runtime/backend.js';
import { onnxruntimeNodeLibrary } from '../../src/runtime/execution-provider.js';
import { loadJsBackend } from '../../src/runtime/js-backend.js';
import { KvCacheFullError } from '../../src/runtime/kv-cache.js';
import { loadNativeBackend } from '../../src/runtime/native-backend.js';
import { PrefixCache } from '../../src/runtime/prefix-cache.js';
import type { RuntimeKind, WorkerInit } from '../../src/runtime/worker-protocol.js';

const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/shared-kv');
const dims = JSON.parse(readFileSync(join(dir, 'dims.json'), 'utf8')) as { numLayers: number; hiddenSize: number; numKvHeads: number; headDim: number; vocabSize: number };
const V = dims.vocabSize;
const bytesPerPosition = 2 * dims.numLayers * dims.numKvHeads * dims.headDim * 4;
const B = 8; // positions per block
const KV_POSITIONS = 100;

function init(runtime: RuntimeKind): WorkerInit {
  return {
    runtime,
    native: { library: onnxruntimeNodeLibrary(), preload: [], cudaRuntime: null },
    graphs: { embed_tokens: join(dir, 'embed_tokens.onnx'), decoder: join(dir, 'decoder_standard.onnx') },
    session: { executionProvider: 'cpu', deviceId: 0, intraOpNumThreads: 1, allowSpinning: false, graphOptimizationLevel: 'all' },
    decoder: { ...dims, kvCacheBytes: KV_POSITIONS * bytesPerPosition },
  };
}

const ids = (n: number, seed: number): Int32Array => Int32Array.from({ length: n }, (_, i) => (seed * 7 + i * 13) % V);
const keys = (chain: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${chain}${i}`);

function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  const scale = Math.max(1, ...want.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  assert.ok(worst <= 1e-4 * scale, `${what}: max |diff| ${worst} over max |logit| ${scale}`);
}

for (const runtime of ['native', 'js'] as const) {
  describe(`prefix cache (${runtime} runtime)`, () => {
    let backend: RuntimeBackend;
    let nextSeq = 1;
    before(async () => {
      backend = await (runtime === 'js' ? loadJsBackend : loadNativeBackend)(init(runtime));
    });
    after(() => backend.release());

    const cache = () => backend.decoder!.cache;
    const stored = () => cache().usage().storedBlocks;
    /** A prefix cache of `blocks` blocks over the backend's cache, emptied first. */
    const prefixCache = (blocks: number): PrefixCache => new PrefixCache(cache(), { capacityBytes: blocks * B * bytesPerPosition, blockPositions: B });

    /** Runs a prompt through a new sequence and stores its blocks under `blockKeys`. */
    async function storePrompt(p: PrefixCache, prompt: Int32Array, blockKeys: string[]): Promise<Float32Array> {
      const seq = nextSeq++;
      assert.equal(p.allocate(seq, prompt.length + 1), 0);
      const { logits } = await backend.decoder!.step([{ seqId: seq, ids: prompt }]);
      p.release(seq, blockKeys);
      assert.equal(cache().has(seq), false);
      return logits;
    }

    test('a stored prefix loads into a new sequence, which continues as a full prefill does', async () => {
      const p = prefixCache(10);
      const prompt = ids(37, 3);
      const whole = await storePrompt(p, prompt, keys('a', 5)); // 4 full blocks in 37 positions: the fifth key is unused
      assert.equal(stored(), 4);
      assert.equal(cache().usage().storedBytes, 4 * B * bytesPerPosition);
      const seq = nextSeq++;
      assert.equal(p.allocate(seq, 40, keys('a', 4)), 32);
      assert.equal(cache().length(seq), 32);
      const rest = await backend.decoder!.step([{ seqId: seq, ids: prompt.slice(32) }]);
      assertClose(rest.logits, whole, 'loaded prefix + the rest of the prompt');
      p.release(seq);
      // the longest run from the first block: a miss ends it, and a chain without its head has none
      for (const [lookup, want] of [
        [['a0', 'a1', 'x', 'a3'], 16],
        [['x', 'a1'], 0],
        [[], 0],
      ] as const) {
        const s = nextSeq++;
        assert.equal(p.allocate(s, 40, [...lookup]), want, `lookup ${lookup}`);
        p.release(s);
      }
      // never more than the reservation holds
      const small = nextSeq++;
      assert.equal(p.allocate(small, 20, keys('a', 4)), 16);
      p.release(small);
      p.clear();
      assert.equal(stored(), 0);
    });

    test('the byte bound evicts the least recently used blocks, a chain tail first', async () => {
      const p = prefixCache(3);
      await storePrompt(p, ids(16, 1), keys('a', 2));
      await storePrompt(p, ids(16, 2), keys('b', 2)); // b1 needs room: a1 goes, not a0
      assert.equal(stored(), 3);
      assert.ok(cache().usage().storedBytes <= 3 * B * bytesPerPosition);
      const hits = (chain: string): number => {
        const s = nextSeq++;
        const n = p.allocate(s, 17, keys(chain, 2));
        p.release(s);
        return n;
      };
      assert.equal(hits('a'), 8);
      assert.equal(hits('b'), 16);
      // a was used before b: storing c evicts a0 then b1 (b's tail), keeping b0
      await storePrompt(p, ids(16, 3), keys('c', 2));
      assert.deepEqual([hits('a'), hits('b'), hits('c')], [0, 8, 16]);
      // a block larger than the whole cache is never stored
      const none = new PrefixCache(cache(), { capacityBytes: B * bytesPerPosition - 1, blockPositions: B });
      assert.equal(none.enabled, false);
      await storePrompt(none, ids(16, 4), keys('d', 2));
      assert.equal(stored(), 3);
      p.clear();
    });

    test('stored blocks give way to a reservation; those it loads go last, tail first', async () => {
      const p = prefixCache(KV_POSITIONS / B);
      await storePrompt(p, ids(40, 5), keys('a', 5)); // 40 of 100 positions stored
      // 70 + 40 stored > 100: a4 (not wanted) goes, then the wanted tail a3: 70 + 24 fits
      const seq = nextSeq++;
      assert.equal(p.allocate(seq, 70, keys('a', 4)), 24);
      assert.equal(stored(), 3);
      p.release(seq);
      // the whole budget: every stored block gives way, as if the cache were empty
      const all = nextSeq++;
      assert.equal(p.allocate(all, KV_POSITIONS, keys('a', 3)), 0);
      assert.equal(stored(), 0);
      p.release(all);
      // what an empty cache refuses, it refuses too, keeping its blocks
      await storePrompt(p, ids(16, 6), keys('b', 2));
      assert.throws(() => p.allocate(nextSeq++, KV_POSITIONS + 1), KvCacheFullError);
      assert.equal(stored(), 2);
      const waiting = nextSeq++;
      assert.equal(p.allocate(waiting, 60), 0);
      assert.throws(() => p.allocate(nextSeq++, 41, keys('b', 2)), KvCacheFullError, 'refused beside the 60 reserved: wait');
      assert.equal(stored(), 2);
      p.release(waiting);
      p.clear();
      // a running sequence's reservation is not given to storage: stored blocks wait beside it
      const running = nextSeq++;
      assert.equal(p.allocate(running, 90), 0);
      await storePrompt(p, ids(8, 7), keys('c', 1)); // 9 reserved beside 90: its block fits the budget
      assert.equal(cache().usage().reservedBytes, 90 * bytesPerPosition);
      assert.ok(cache().usage().storedBytes + cache().usage().reservedBytes <= KV_POSITIONS * bytesPerPosition);
      p.release(running);
      p.clear();
    });

    test('PREFIX_CACHE_SIZE 0: nothing is looked up or stored', async () => {
      const off = new PrefixCache(cache(), { capacityBytes: 0, blockPositions: B });
      await storePrompt(off, ids(24, 8), keys('a', 3));
      assert.equal(stored(), 0);
      const seq = nextSeq++;
      assert.equal(off.allocate(seq, 30, keys('a', 3)), 0);
      off.release(seq);
      assert.equal(cache().usage().sequences, 0);
    });
  });
}
