// The `native` backend's KV cache: the KvCache interface over the addon's arena, whose blocks
// live in native memory (CPU) or device memory (CUDA) and never cross into JS. Same layout,
// growth and byte budget as JsKvCache (kv-cache.ts); the prefix-cache primitives copy whole
// positions between a sequence and storage of the same memory.

import { KvCacheFullError, type KvCache, type KvCacheUsage, type KvLayout } from './kv-cache.js';
import { nativeCall, type NativeDecoder } from './native-addon.js';

const U32_MAX = 0xffff_ffff;

function u32(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > U32_MAX) throw new Error(`KV cache: ${what} ${n} is not a count of positions`);
  return n;
}

export class NativeKvCache implements KvCache {
  readonly layout: KvLayout;
  readonly bytesPerPosition: number;
  private readonly decoder: NativeDecoder;

  constructor(decoder: NativeDecoder, layout: KvLayout) {
    this.decoder = decoder;
    this.layout = layout;
    this.bytesPerPosition = decoder.bytesPerPosition;
  }

  allocate(seqId: number, maxPositions: number): void {
    if (Number.isSafeInteger(maxPositions) && maxPositions > U32_MAX) {
      const free = this.usage().capacityBytes - this.usage().reservedBytes;
      throw new KvCacheFullError(`KV cache full: sequence ${seqId} needs ${maxPositions * this.bytesPerPosition} bytes, ${free} are free`);
    }
    nativeCall(() => this.decoder.allocate(u32('sequence id', seqId), u32('maxPositions', maxPositions)));
  }

  has(seqId: number): boolean {
    return Number.isSafeInteger(seqId) && seqId >= 0 && seqId <= U32_MAX && this.decoder.has(seqId);
  }

  length(seqId: number): number {
    return nativeCall(() => this.decoder.length(u32('sequence id', seqId)));
  }

  free(seqId: number): void {
    if (this.has(seqId)) this.decoder.free(seqId);
  }

  usage(): KvCacheUsage {
    const u = this.decoder.usage();
    return {
      usedBytes: u.usedBytes,
      reservedBytes: u.reservedBytes,
      capacityBytes: u.capacityBytes,
      sequences: u.sequences,
      storedBytes: u.storedBytes,
      storedBlocks: u.storedBlocks,
    };
  }

  /** See KvCache.saveBlock: the copy stays in native (or device) memory. */
  saveBlock(seqId: number, start: number, count: number): number {
    return nativeCall(() => this.decoder.saveBlock(u32('sequence id', seqId), u32('start', start), u32('count', count)));
  }

  loadBlock(seqId: number, handle: number): void {
    nativeCall(() => this.decoder.loadBlock(u32('sequence id', seqId), u32('handle', handle)));
  }

  dropBlock(handle: number): void {
    nativeCall(() => this.decoder.dropBlock(u32('handle', handle)));
  }
}
