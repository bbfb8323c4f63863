// The KV cache, behind one interface owned by the runtime.
//
// The decoder returns only the keys/values of the T new positions (present.{i}.* [B,Hkv,T,Dh])
// and takes the whole past as input (past_key_values.{i}.* [B,Hkv,P,Dh]). The cache keeps each
// sequence's past and assembles the past feeds of a batch. The scheduler sees only sequence ids,
// so a device-resident implementation can replace the JS-memory one below without changes above.
//
// Capacity is in bytes and enforced by reservation: a sequence reserves room for the positions
// it may reach (prompt + max new tokens) when it is allocated, so that a running sequence never
// runs out of room half-way; admission control fails fast instead.

export interface KvLayout {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
}

export interface KvCacheUsage {
  /** Bytes holding cached positions. */
  usedBytes: number;
  /** Bytes promised to allocated sequences (>= usedBytes). */
  reservedBytes: number;
  capacityBytes: number;
  sequences: number;
}

/** One decoder call's present tensors, per layer, each [B,Hkv,T,Dh]. */
export interface PresentTensors {
  keys: Float32Array[];
  values: Float32Array[];
  batch: number;
  newPositions: number; // T
}

/** The past part of a batch's decoder feeds. */
export interface PastFeeds {
  pastLength: number; // P: the longest past in the batch
  keys: Float32Array[]; // per layer [B,Hkv,P,Dh]
  values: Float32Array[];
  /** [B,P] 1 where a row has a real past position, 0 where it is padding. */
  mask: Uint8Array;
  /** Each row's real past length. */
  lengths: number[];
}

export interface KvCache {
  readonly layout: KvLayout;
  /** Bytes one position takes over all layers, keys and values. */
  readonly bytesPerPosition: number;
  /** Starts an empty sequence with room for `maxPositions`; throws KvCacheFullError if it does not fit. */
  allocate(seqId: number, maxPositions: number): void;
  has(seqId: number): boolean;
  length(seqId: number): number;
  /**
   * Appends row `row` of `presents`: its last `count` new positions (a row with fewer new tokens
   * than T is left-padded, so its real positions are the last ones).
   */
  append(seqId: number, presents: PresentTensors, row: number, count: number): void;
  /**
   * Past feeds for a batch, in the order given; shorter pasts are right-padded with mask 0.
   * The arrays may be the cache's own storage: valid until the next append or free.
   */
  gather(seqIds: readonly number[]): PastFeeds;
  free(seqId: number): void;
  usage(): KvCacheUsage;
}

export class KvCacheFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KvCacheFullError';
  }
}

const FLOAT_BYTES = 4;
/** Storage grows in blocks of this many positions (see gather's single-sequence case). */
const GROWTH_BLOCK = 64;

/** One sequence's cache: per layer, keys and values laid out [Hkv, capacity, Dh]. */
interface Sequence {
  length: number;
  capacity: number; // positions allocated in the arrays
  reserved: number; // positions promised
  keys: Float32Array[];
  values: Float32Array[];
}

/** The KV cache in JS memory (the worker's heap), for the CPU execution provider. */
export class JsKvCache implements KvCache {
  readonly layout: KvLayout;
  readonly bytesPerPosition: number;
  private readonly capacityBytes: number;
  private readonly sequences = new Map<number, Sequence>();
  private reservedPositions = 0;

  constructor(layout: KvLayout, capacityBytes: number) {
    this.layout = layout;
    this.bytesPerPosition = 2 * layout.numLayers * layout.numKvHeads * layout.headDim * FLOAT_BYTES;
    this.capacityBytes = capacityBytes;
  }

  allocate(seqId: number, maxPositions: number): void {
    if (this.sequences.has(seqId)) throw new Error(`KV cache: sequence ${seqId} is already allocated`);
    this.reserve(maxPositions, seqId);
    this.sequences.set(seqId, { length: 0, capacity: 0, reserved: maxPositions, keys: [], values: [] });
  }

  has(seqId: number): boolean {
    return this.sequences.has(seqId);
  }

  length(seqId: number): number {
    return this.get(seqId).length;
  }

  append(seqId: number, presents: PresentTensors, row: number, count: number): void {
    const seq = this.get(seqId);
    const { numLayers, numKvHeads: H, headDim: Dh } = this.layout;
    const T = presents.newPositions;
    if (count > T || row >= presents.batch) throw new Error(`KV cache: row ${row} count ${count} outside [${presents.batch},${T}]`);
    // Past the reservation: grow it if the capacity allows (callers that reserved enough never do).
    if (seq.length + count > seq.reserved) {
      this.reserve(seq.length + count - seq.reserved, seqId);
      seq.reserved = seq.length + count;
    }
    if (seq.length + count > seq.capacity) this.grow(seq, seq.length + count);

    for (let l = 0; l < numLayers; l++) {
      for (const [src, dst] of [
        [presents.keys[l], seq.keys[l]],
        [presents.values[l], seq.values[l]],
      ]) {
        for (let h = 0; h < H; h++) {
          // present[row, h, T-count .. T-1, :] -> cache[h, length .. length+count-1, :]
          const from = ((row * H + h) * T + (T - count)) * Dh;
          dst.set(src.subarray(from, from + count * Dh), (h * seq.capacity + seq.length) * Dh);
        }
      }
    }
    seq.length += count;
  }

  gather(seqIds: readonly number[]): PastFeeds {
    const { numLayers, numKvHeads: H, headDim: Dh } = this.layout;
    const seqs = seqIds.map((id) => this.get(id));
    // One sequence: its storage already is a [1,Hkv,capacity,Dh] tensor. Feeding it whole, with
    // the unused tail masked out, saves copying the entire past on every decode step; the
    // price is attending over fewer than GROWTH_BLOCK masked slots.
    if (seqs.length === 1 && seqs[0].length > 0) {
      const seq = seqs[0];
      const mask = new Uint8Array(seq.capacity).fill(1, 0, seq.length);
      return { pastLength: seq.capacity, keys: seq.keys, values: seq.values, mask, lengths: [seq.length] };
    }
    const B = seqs.length;
    const P = Math.max(0, ...seqs.map((s) => s.length));
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    for (let l = 0; l < numLayers; l++) {
      const k = new Float32Array(B * H * P * Dh); // [B,Hkv,P,Dh], zero padding
      const v = new Float32Array(B * H * P * Dh);
      seqs.forEach((seq, b) => {
        if (seq.length === 0) return; // nothing cached yet (its arrays may not exist)
        for (let h = 0; h < H; h++) {
          const from = h * seq.capacity * Dh;
          const to = (b * H + h) * P * Dh;
          k.set(seq.keys[l].subarray(from, from + seq.length * Dh), to);
          v.set(seq.values[l].subarray(from, from + seq.length * Dh), to);
        }
      });
      keys.push(k);
      values.push(v);
    }
    const mask = new Uint8Array(B * P);
    seqs.forEach((seq, b) => mask.fill(1, b * P, b * P + seq.length));
    return { pastLength: P, keys, values, mask, lengths: seqs.map((s) => s.length) };
  }

  free(seqId: number): void {
    const seq = this.sequences.get(seqId);
    if (!seq) return;
    this.reservedPositions -= seq.reserved;
    this.sequences.delete(seqId);
  }

  usage(): KvCacheUsage {
    let used = 0;
    for (const s of this.sequences.values()) used += s.length;
    return {
      usedBytes: used * this.bytesPerPosition,
      reservedBytes: this.reservedPositions * this.bytesPerPosition,
      capacityBytes: this.capacityBytes,
      sequences: this.sequences.size,
    };
  }

  private get(seqId: number): Sequence {
    const seq = this.sequences.get(seqId);
    if (!seq) throw new Error(`KV cache: unknown sequence ${seqId}`);
    return seq;
  }

  private reserve(positions: number, seqId: number): void {
    const want = (this.reservedPositions + positions) * this.bytesPerPosition;
    if (want > this.capacityBytes) {
      throw new KvCacheFullError(
        `KV cache full: sequence ${seqId} needs ${positions * this.bytesPerPosition} bytes, ` +
          `${this.capacityBytes - this.reservedPositions * this.bytesPerPosition} of ${this.capacityBytes} are free`,
      );
    }
    this.reservedPositions += positions;
  }

  /**
   * Reallocates a sequence's arrays to the next whole block (at most its reservation), copying
   * each head's rows. Copying every GROWTH_BLOCK positions costs about 1/GROWTH_BLOCK of a full
   * copy per token.
   */
  private grow(seq: Sequence, needed: number): void {
    const { numLayers, numKvHeads: H, headDim: Dh } = this.layout;
    const block = Math.ceil(needed / GROWTH_BLOCK) * GROWTH_BLOCK;
    const capacity = Math.max(needed, Math.min(block, seq.reserved));
    const regrow = (old: Float32Array | undefined): Float32Array => {
      const next = new Float32Array(H * capacity * Dh);
      if (old) {
        for (let h = 0; h < H; h++) {
          next.set(old.subarray(h * seq.capacity * Dh, (h * seq.capacity + seq.length) * Dh), h * capacity * Dh);
        }
      }
      return next;
    };
    for (let l = 0; l < numLayers; l++) {
      seq.keys[l] = regrow(seq.keys[l]);
      seq.values[l] = regrow(seq.values[l]);
    }
    seq.capacity = capacity;
  }
}
