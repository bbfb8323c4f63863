// The KV cache, behind one interface owned by the runtime.
//
// The decoder returns only the keys/values of the T new positions (present.{i}.* [B,Hkv,T,Dh])
// and takes the whole past as input (past_key_values.{i}.* [B,Hkv,P,Dh]). The cache keeps each
// sequence's past and assembles the past feeds of a batch. The scheduler sees only sequence ids,
// so a device-resident implementation can replace the JS-memory one below without changes above.
//
// Capacity is in bytes and enforced by reservation: a sequence reserves room for the positions
// it may reach (prompt + max new tokens) when it is allocated, so that a running sequence never
// runs out of room half-way; admission control fails fast instead. Blocks stored outside any
// sequence for the prefix cache (saveBlock, prefix-cache.ts) count in the same budget.

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
  /** Bytes of the blocks stored outside any sequence (saveBlock), counted in the same budget. */
  storedBytes: number;
  storedBlocks: number;
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

/**
 * What every KV cache implements, whatever memory it lives in (the JS heap, native memory, a
 * GPU): sequences are allocated with a reservation, grow as steps append to them, and are freed.
 * How a step reads and extends the cache is the backend's business (JsKvCache's gather/append
 * below for the js backend).
 */
export interface KvCache {
  readonly layout: KvLayout;
  /** Bytes one position takes over all layers, keys and values. */
  readonly bytesPerPosition: number;
  /** Starts an empty sequence with room for `maxPositions`; throws KvCacheFullError if it does not fit. */
  allocate(seqId: number, maxPositions: number): void;
  has(seqId: number): boolean;
  length(seqId: number): number;
  free(seqId: number): void;
  usage(): KvCacheUsage;
  /**
   * Copies positions [start, start+count) of a sequence into a block kept outside it; returns
   * its handle. The block counts in the budget beside the other sequences' reservations (the
   * source's own reservation covers it until the source is freed: blocks are saved from a
   * sequence about to be freed); throws KvCacheFullError when it does not fit.
   */
  saveBlock(seqId: number, start: number, count: number): number;
  /** Appends a stored block at the sequence's current length, within its reservation. */
  loadBlock(seqId: number, handle: number): void;
  /** Frees a stored block and its budget. */
  dropBlock(handle: number): void;
}

/** A KV cache whose data the step code reads and writes as JS arrays (the js backend's). */
export interface HostKvCache extends KvCache {
  /**
   * Appends row `row` of `presents`: its last `count` new positions (a row with fewer new tokens
   * than T is left-padded, so its real positions are the last ones).
   */
  append(seqId: number, presents: PresentTensors, row: number, count: number): void;
  /**
   * Past feeds for a batch, in the order given; shorter pasts are right-padded with mask 0.
   * The arrays may be views of the cache's own storage: read them before the next call that
   * changes the cache. Asking for the same sequences in the same order step after step is what
   * an implementation can make cheap.
   */
  gather(seqIds: readonly number[]): PastFeeds;
}

export class KvCacheFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KvCacheFullError';
  }
}

const FLOAT_BYTES = 4;
/** Storage grows in blocks of this many positions (see gather's zero-copy case). */
const GROWTH_BLOCK = 64;

/**
 * Storage shared by one or more sequences: per layer, keys and values laid out
 * [rows, Hkv, capacity, Dh], which is the decoder's past_key_values layout. A run of
 * consecutive rows is therefore a ready past feed for those sequences, with no copy.
 */
interface Block {
  rows: number;
  capacity: number; // positions per row
  keys: Float32Array[];
  values: Float32Array[];
  /** The sequence in each row, or null once it moved to another block or was freed. */
  members: (Sequence | null)[];
}

interface Sequence {
  id: number;
  length: number;
  reserved: number; // positions promised
  block: Block;
  row: number;
}

/** Positions kept outside any sequence (saveBlock): one array laid out [layers][key, value][Hkv, count, Dh]. */
interface StoredBlock {
  count: number;
  data: Float32Array;
}

/**
 * The KV cache in JS memory (the worker's heap), for the CPU execution provider.
 *
 * A decode batch keeps its sequences in one block, so that each step feeds the block itself
 * and appends one position per row in place: no per-step copy of the whole past (at batch 8
 * that copy was about 160 MB per step for Qwen2-0.5B at 800 positions, a third of the step).
 * When a step asks for sequences that are not consecutive rows of one block (a sequence joined
 * or left), they move into a fresh block once; the copy then serves every later step.
 * A sequence fed alone (prefill) uses its own block, or its row of a shared one, without a copy.
 */
export class JsKvCache implements HostKvCache {
  readonly layout: KvLayout;
  readonly bytesPerPosition: number;
  private readonly capacityBytes: number;
  private readonly sequences = new Map<number, Sequence>();
  private reservedPositions = 0;
  private readonly stored = new Map<number, StoredBlock>();
  private storedPositions = 0;
  private nextHandle = 1;

  constructor(layout: KvLayout, capacityBytes: number) {
    this.layout = layout;
    this.bytesPerPosition = 2 * layout.numLayers * layout.numKvHeads * layout.headDim * FLOAT_BYTES;
    this.capacityBytes = capacityBytes;
  }

  allocate(seqId: number, maxPositions: number): void {
    if (this.sequences.has(seqId)) throw new Error(`KV cache: sequence ${seqId} is already allocated`);
    this.reserve(maxPositions, seqId);
    const seq: Sequence = { id: seqId, length: 0, reserved: maxPositions, block: this.newBlock(1, 0), row: 0 };
    seq.block.members[0] = seq;
    this.sequences.set(seqId, seq);
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
    if (seq.length + count > seq.block.capacity) this.grow(seq.block, seq.length + count);

    const { block } = seq;
    for (let l = 0; l < numLayers; l++) {
      for (const [src, dst] of [
        [presents.keys[l], block.keys[l]],
        [presents.values[l], block.values[l]],
      ]) {
        for (let h = 0; h < H; h++) {
          // present[row, h, T-count .. T-1, :] -> block[seq.row, h, length .. length+count-1, :]
          const from = ((row * H + h) * T + (T - count)) * Dh;
          dst.set(src.subarray(from, from + count * Dh), ((seq.row * H + h) * block.capacity + seq.length) * Dh);
        }
      }
    }
    seq.length += count;
  }

  gather(seqIds: readonly number[]): PastFeeds {
    if (seqIds.length === 0) throw new Error('KV cache: gather of no sequences');
    if (new Set(seqIds).size !== seqIds.length) throw new Error(`KV cache: a sequence appears twice in [${seqIds}]`);
    const seqs = seqIds.map((id) => this.get(id));
    if (!isRowRun(seqs)) this.moveToNewBlock(seqs);
    // Consecutive rows of one block: their slice of the block is the feed; each row's tail
    // beyond its length is masked out (the price: attending over a few masked slots).
    const { block, row: first } = seqs[0];
    const B = seqs.length;
    const P = block.capacity;
    const rowFloats = this.layout.numKvHeads * P * this.layout.headDim;
    const slice = (a: Float32Array): Float32Array => a.subarray(first * rowFloats, (first + B) * rowFloats);
    const mask = new Uint8Array(B * P);
    seqs.forEach((seq, b) => mask.fill(1, b * P, b * P + seq.length));
    return {
      pastLength: P,
      keys: block.keys.map(slice),
      values: block.values.map(slice),
      mask,
      lengths: seqs.map((s) => s.length),
    };
  }

  free(seqId: number): void {
    const seq = this.sequences.get(seqId);
    if (!seq) return;
    this.reservedPositions -= seq.reserved;
    seq.block.members[seq.row] = null; // the block is dropped with its last member
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
      storedBytes: this.storedPositions * this.bytesPerPosition,
      storedBlocks: this.stored.size,
    };
  }

  saveBlock(seqId: number, start: number, count: number): number {
    const seq = this.get(seqId);
    if (!(Number.isSafeInteger(start) && Number.isSafeInteger(count) && start >= 0 && count > 0 && start + count <= seq.length)) {
      throw new Error(`KV cache: cannot save positions [${start}, ${start + count}) of sequence ${seqId}, which has ${seq.length}`);
    }
    const bpp = this.bytesPerPosition;
    const inUse = (this.reservedPositions - seq.reserved + this.storedPositions) * bpp;
    if (inUse + count * bpp > this.capacityBytes) {
      throw new KvCacheFullError(`KV cache full: a stored block of ${count * bpp} bytes does not fit beside ${inUse} of ${this.capacityBytes} in use`);
    }
    const data = new Float32Array(count * (bpp / FLOAT_BYTES));
    this.copyPositions(seq, start, count, data, 'out');
    const handle = this.nextHandle++;
    this.stored.set(handle, { count, data });
    this.storedPositions += count;
    return handle;
  }

  loadBlock(seqId: number, handle: number): void {
    const block = this.stored.get(handle);
    if (!block) throw new Error(`KV cache: unknown stored block ${handle}`);
    const seq = this.get(seqId);
    const { count } = block;
    if (seq.length + count > seq.reserved) {
      throw new Error(
        `KV cache: a block of ${count} positions does not fit sequence ${seqId}'s reservation (${seq.length} of ${seq.reserved} used)`,
      );
    }
    // Blocks are loaded one after another at allocation: grow geometrically, not 64 at a time.
    const cap = seq.block.capacity;
    if (seq.length + count > cap) this.grow(seq.block, Math.max(seq.length + count, Math.min(2 * cap, seq.reserved)));
    this.copyPositions(seq, seq.length, count, block.data, 'in');
    seq.length += count;
  }

  dropBlock(handle: number): void {
    const block = this.stored.get(handle);
    if (!block) throw new Error(`KV cache: unknown stored block ${handle}`);
    this.stored.delete(handle);
    this.storedPositions -= block.count;
  }

  private get(seqId: number): Sequence {
    const seq = this.sequences.get(seqId);
    if (!seq) throw new Error(`KV cache: unknown sequence ${seqId}`);
    return seq;
  }

  private reserve(positions: number, seqId: number): void {
    const taken = (this.reservedPositions + this.storedPositions) * this.bytesPerPosition;
    if (taken + positions * this.bytesPerPosition > this.capacityBytes) {
      throw new KvCacheFullError(
        `KV cache full: sequence ${seqId} needs ${positions * this.bytesPerPosition} bytes, ` +
          `${Math.max(0, this.capacityBytes - taken)} of ${this.capacityBytes} are free`,
      );
    }
    this.reservedPositions += positions;
  }

  /**
   * Copies positions [start, start+count) of `seq`'s row to (`out`) or from (`in`) a stored
   * block's array, laid out [layers][key, value][Hkv, count, Dh].
   */
  private copyPositions(seq: Sequence, start: number, count: number, data: Float32Array, direction: 'in' | 'out'): void {
    const { numLayers, numKvHeads: H, headDim: Dh } = this.layout;
    const { block } = seq;
    const run = count * Dh;
    for (let l = 0; l < numLayers; l++) {
      for (const [kind, plane] of [block.keys[l], block.values[l]].entries()) {
        for (let h = 0; h < H; h++) {
          const at = ((seq.row * H + h) * block.capacity + start) * Dh;
          const there = ((l * 2 + kind) * H + h) * run;
          if (direction === 'out') data.set(plane.subarray(at, at + run), there);
          else plane.set(data.subarray(there, there + run), at);
        }
      }
    }
  }

  private newBlock(rows: number, capacity: number): Block {
    const { numLayers, numKvHeads: H, headDim: Dh } = this.layout;
    const n = rows * H * capacity * Dh;
    return {
      rows,
      capacity,
      keys: Array.from({ length: numLayers }, () => new Float32Array(n)),
      values: Array.from({ length: numLayers }, () => new Float32Array(n)),
      members: new Array<Sequence | null>(rows).fill(null),
    };
  }

  /**
   * Positions per row for a block that must hold `needed`: the next whole GROWTH_BLOCK, but no
   * more than the largest reservation among its members. Regrowing every GROWTH_BLOCK positions
   * costs about 1/GROWTH_BLOCK of a full copy per token.
   */
  private capacityFor(needed: number, members: readonly Sequence[]): number {
    if (needed === 0) return 0;
    const block = Math.ceil(needed / GROWTH_BLOCK) * GROWTH_BLOCK;
    return Math.max(needed, Math.min(block, Math.max(...members.map((s) => s.reserved))));
  }

  /** Copies `seq`'s cached positions into row `row` of `to` (heads are laid out by capacity). */
  private copyRow(seq: Sequence, to: Block, row: number): void {
    const { numLayers, numKvHeads: H, headDim: Dh } = this.layout;
    const from = seq.block;
    for (let l = 0; l < numLayers; l++) {
      for (let h = 0; h < H; h++) {
        const src = (seq.row * H + h) * from.capacity * Dh;
        const dst = (row * H + h) * to.capacity * Dh;
        to.keys[l].set(from.keys[l].subarray(src, src + seq.length * Dh), dst);
        to.values[l].set(from.values[l].subarray(src, src + seq.length * Dh), dst);
      }
    }
  }

  /** Moves the sequences, in this order, into consecutive rows of a fresh block. */
  private moveToNewBlock(seqs: readonly Sequence[]): void {
    const longest = Math.max(...seqs.map((s) => s.length));
    // Room for the next token, so that the decode step after the move does not regrow at once.
    const block = this.newBlock(seqs.length, longest === 0 ? 0 : this.capacityFor(longest + 1, seqs));
    seqs.forEach((seq, row) => {
      this.copyRow(seq, block, row);
      seq.block.members[seq.row] = null;
      block.members[row] = seq;
      seq.block = block;
      seq.row = row;
    });
  }

  /** Reallocates a block with room for `needed` positions per row, keeping its live rows. */
  private grow(block: Block, needed: number): void {
    const live = block.members.filter((s): s is Sequence => s !== null);
    const bigger = this.newBlock(block.rows, this.capacityFor(needed, live));
    for (const seq of live) this.copyRow(seq, bigger, seq.row);
    // Swap the storage in place so that the members' block references stay valid.
    block.capacity = bigger.capacity;
    block.keys = bigger.keys;
    block.values = bigger.values;
  }
}

/** Whether the sequences are consecutive rows, in order, of one block. */
function isRowRun(seqs: readonly Sequence[]): boolean {
  return seqs.every((s, i) => s.block === seqs[0].block && s.row === seqs[0].row + i);
}
