// The prefix cache: prompt KV kept after a sequence is freed, by block, so that a later prompt
// starting with the same positions loads them instead of prefilling them again.
//
// Keys are chain hashes (src/engine/prefix-hash.ts): block i's key hashes block i-1's key and
// block i's positions, so one key stands for the whole prefix up to its block's end. A lookup
// takes the longest run of keys found from the first block on.
//
// Storage is the KV cache's own (saveBlock/loadBlock/dropBlock of the KvCache interface), so it
// lives where the backend keeps its KV (JS heap, native or device memory) and counts in the same
// byte budget as the reservations of running sequences. Two bounds:
// - its own capacity (PREFIX_CACHE_SIZE): least recently used blocks are dropped to stay under it;
// - the shared budget: stored blocks give way to admission. When a sequence's reservation does
//   not fit beside the stored blocks but would beside the reservations alone, blocks are dropped
//   (least recently used first) until it fits, so stored blocks never refuse or delay a sequence
//   that an empty prefix cache would admit, and are kept when it would refuse it too.
// A block is loaded by copying it into the sequence, so a running sequence holds no reference
// to a stored block: only the blocks an allocation is about to load are kept from eviction
// (dropped last, tail first, and then that allocation loads fewer).
//
// Within a chain the head is the most valuable part (every longer prefix goes through it): the
// blocks of a chain are touched tail first, so that the head ends up most recently used and the
// tail is evicted first.

import { KvCacheFullError, type KvCache } from './kv-cache.js';

/**
 * Positions per block, as vLLM's default. Smaller blocks share more of a prefix that diverges
 * mid-block; each block costs one copy per layer and a map entry, which at 16 positions is
 * about 50 blocks for a SigLIP image prompt (729 positions).
 */
export const PREFIX_BLOCK_POSITIONS = 16;

export interface PrefixCacheOptions {
  /** Most bytes of stored blocks; 0 turns the cache off (nothing is looked up or stored). */
  capacityBytes: number;
  /** Positions per block (the hashes' block size). */
  blockPositions: number;
}

export class PrefixCache {
  private readonly cache: KvCache;
  private readonly capacityBytes: number;
  private readonly blockPositions: number;
  /** key -> stored block handle, least recently used first (Map keeps insertion order). */
  private readonly entries = new Map<string, number>();

  constructor(cache: KvCache, options: PrefixCacheOptions) {
    if (!(Number.isInteger(options.blockPositions) && options.blockPositions > 0)) {
      throw new Error(`prefix cache: blockPositions ${options.blockPositions} is not a positive integer`);
    }
    this.cache = cache;
    this.capacityBytes = options.capacityBytes;
    this.blockPositions = options.blockPositions;
  }

  get enabled(): boolean {
    return this.capacityBytes >= this.blockBytes;
  }

  private get blockBytes(): number {
    return this.blockPositions * this.cache.bytesPerPosition;
  }

  /** Blocks stored now. */
  get blocks(): number {
    return this.entries.size;
  }

  /**
   * Allocates a sequence (as KvCache.allocate) and loads the longest cached prefix of
   * `blockKeys` into it; returns the positions loaded. The caller passes only keys of blocks it
   * wants loaded (a prompt's last position must still be run, for its logits).
   */
  allocate(seqId: number, maxPositions: number, blockKeys: readonly string[] = []): number {
    const matched: string[] = [];
    if (this.enabled) {
      for (const key of blockKeys) {
        if (!this.entries.has(key) || (matched.length + 1) * this.blockPositions > maxPositions) break;
        matched.push(key);
      }
    }
    const keep = new Set(matched);
    for (;;) {
      try {
        this.cache.allocate(seqId, maxPositions);
        break;
      } catch (err) {
        if (!(err instanceof KvCacheFullError)) throw err;
        // Refused beside the other reservations alone, as an empty prefix cache would refuse it:
        // keep the blocks (the sequence waits for running ones to leave, and may hit them then).
        const u = this.cache.usage();
        if (u.reservedBytes + maxPositions * this.cache.bytesPerPosition > u.capacityBytes) throw err;
        const victim = this.leastRecent(keep) ?? matched.pop();
        if (victim === undefined) throw err; // nothing stored is in the way
        this.drop(victim);
      }
    }
    try {
      for (const key of matched) this.cache.loadBlock(seqId, this.entries.get(key)!);
    } catch (err) {
      this.cache.free(seqId);
      throw err;
    }
    this.touchChain(matched);
    return matched.length * this.blockPositions;
  }

  /**
   * Stores the sequence's blocks not stored yet (the first `blockKeys.length` blocks, those
   * within its length), then frees it. Storing stops at the first block that fits neither the
   * capacity (after dropping other chains' blocks) nor the budget: a prefix is only useful from
   * its head.
   */
  release(seqId: number, blockKeys: readonly string[] = []): void {
    if (this.enabled && blockKeys.length > 0 && this.cache.has(seqId)) this.store(seqId, blockKeys);
    this.cache.free(seqId);
  }

  /** Drops every stored block. */
  clear(): void {
    for (const key of [...this.entries.keys()]) this.drop(key);
  }

  private store(seqId: number, blockKeys: readonly string[]): void {
    const B = this.blockPositions;
    const n = Math.min(blockKeys.length, Math.floor(this.cache.length(seqId) / B));
    const chain: string[] = [];
    for (let i = 0; i < n; i++) {
      const key = blockKeys[i];
      chain.push(key);
      if (this.entries.has(key)) continue;
      const keep = new Set(chain);
      while (this.entries.size * this.blockBytes + this.blockBytes > this.capacityBytes) {
        const victim = this.leastRecent(keep);
        if (victim === undefined) break;
        this.drop(victim);
      }
      if (this.entries.size * this.blockBytes + this.blockBytes > this.capacityBytes) {
        chain.pop();
        break;
      }
      let handle: number;
      try {
        handle = this.cache.saveBlock(seqId, i * B, B);
      } catch (err) {
        if (!(err instanceof KvCacheFullError)) throw err;
        chain.pop();
        break;
      }
      this.entries.set(key, handle);
    }
    this.touchChain(chain);
  }

  /** Marks a chain's blocks used, tail first, so that its head is the most recently used. */
  private touchChain(chain: readonly string[]): void {
    for (let i = chain.length - 1; i >= 0; i--) {
      const handle = this.entries.get(chain[i]);
      if (handle === undefined) continue;
      this.entries.delete(chain[i]);
      this.entries.set(chain[i], handle);
    }
  }

  private leastRecent(except: ReadonlySet<string>): string | undefined {
    for (const key of this.entries.keys()) if (!except.has(key)) return key;
    return undefined;
  }

  private drop(key: string): void {
    const handle = this.entries.get(key);
    if (handle === undefined) return;
    this.entries.delete(key);
    this.cache.dropBlock(handle);
  }
}
