// A small seeded PRNG so that the same seed and the same request give the same tokens.
// xoshiro128** (Blackman & Vigna): 128 bits of state, fast in 32-bit integer arithmetic, good
// enough statistically for sampling. The state is seeded from the (up to 53-bit) seed through
// splitmix32 so that nearby seeds give unrelated streams.

export interface Rng {
  /** A uniform float in [0, 1). */
  next(): number;
}

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export function createRng(seed: number): Rng {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
  // Fold both 32-bit halves of the seed (negative seeds included) into the seeding state.
  const lo = Number(BigInt.asUintN(32, BigInt(seed)));
  const hi = Number(BigInt.asUintN(32, BigInt(seed) >> 32n));
  const st = { s: lo ^ Math.imul(hi, 0x27d4eb2d) };
  const s = new Uint32Array([splitmix32(st), splitmix32(st), splitmix32(st), splitmix32(st)]);
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1; // the all-zero state is a fixed point

  return {
    next(): number {
      const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
      const t = s[1] << 9;
      s[2] ^= s[0];
      s[3] ^= s[1];
      s[1] ^= s[2];
      s[0] ^= s[3];
      s[2] ^= t;
      s[3] = rotl(s[3], 11);
      return result / 4294967296;
    },
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A random seed for requests that bring none (reported nowhere, so any source will do). */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32);
}
