// A least-recently-used map from image keys to connector outputs, bounded by the bytes of the
// stored embeddings (the part that grows with the model: 729 x 2560 floats = 7.5 MB per image
// for TinyLLaVA-Phi-2), not by entry count, so that one setting means the same memory for every
// model. Keys are content hashes (image-key.ts); this class only stores and evicts.

export interface ImageCacheUsage {
  bytes: number;
  entries: number;
}

export class ImageCache {
  readonly capacityBytes: number;
  // A Map iterates in insertion order: re-inserting on every hit keeps the oldest entry first.
  private readonly entries = new Map<string, Float32Array>();
  private bytes = 0;

  constructor(capacityBytes: number) {
    this.capacityBytes = capacityBytes;
  }

  /** The embeddings stored under `key`, now the most recently used; never mutate them. */
  get(key: string): Float32Array | undefined {
    const value = this.entries.get(key);
    if (value === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, value);
    return value;
  }

  /** Stores `value` as the most recently used entry, evicting the least recently used until it fits. */
  set(key: string, value: Float32Array): void {
    const old = this.entries.get(key);
    if (old !== undefined) {
      this.entries.delete(key);
      this.bytes -= old.byteLength;
    }
    // One entry larger than the whole cache would only evict everything and then itself.
    if (value.byteLength > this.capacityBytes) return;
    this.entries.set(key, value);
    this.bytes += value.byteLength;
    for (const [oldest, v] of this.entries) {
      if (this.bytes <= this.capacityBytes) break;
      this.entries.delete(oldest);
      this.bytes -= v.byteLength;
    }
  }

  /** Keys from least to most recently used (for tests and debugging). */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  usage(): ImageCacheUsage {
    return { bytes: this.bytes, entries: this.entries.size };
  }
}
