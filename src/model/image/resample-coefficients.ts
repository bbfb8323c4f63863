// Per-output-pixel convolution windows for one axis, computed the way Pillow's 8-bit resampler
// computes them, so that the integer weights (and hence every output byte) are identical.
//
//   scale        = inSize / outSize               (input pixels per output pixel)
//   filterScale  = max(scale, 1)                   (widen the kernel only when shrinking: antialias)
//   support      = filter.support * filterScale    (kernel radius in input pixels)
//   center(x)    = (x + 0.5) * scale               (output pixel centre in input coordinates)
//   window(x)    = [trunc(center - support + 0.5), trunc(center + support + 0.5)) clamped to the input
//   weight(i)    = filter((i - center + 0.5) / filterScale), then divided by the window's sum
//
// The normalised double weights are then turned into fixed-point integers with PRECISION_BITS
// fractional bits, rounding half away from zero, exactly like Pillow's 8-bit path. Every
// floating-point operation below is kept in Pillow's order: reordering them changes the last
// bit of some weights and, through the rounding, a few output bytes.

/** Fractional bits of the fixed-point weights: 32 - 8 (pixel) - 2 (headroom for negative lobes). */
export const PRECISION_BITS = 32 - 8 - 2;

export type ResampleFilter = 'bicubic' | 'bilinear' | 'nearest' | 'box' | 'hamming' | 'lanczos';

interface Kernel {
  support: number;
  weight(x: number): number;
}

// Keys' cubic convolution with a = -0.5 (Pillow's BICUBIC), support 2.
const BICUBIC_A = -0.5;
const bicubic: Kernel = {
  support: 2,
  weight(x) {
    if (x < 0) x = -x;
    if (x < 1) return ((BICUBIC_A + 2) * x - (BICUBIC_A + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * BICUBIC_A;
    return 0;
  },
};

// Triangle (Pillow's BILINEAR), support 1.
const bilinear: Kernel = {
  support: 1,
  weight(x) {
    if (x < 0) x = -x;
    return x < 1 ? 1 - x : 0;
  },
};

// Pillow's BOX: 1 on (-0.5, 0.5], support 0.5.
const box: Kernel = {
  support: 0.5,
  weight(x) {
    return x > -0.5 && x <= 0.5 ? 1 : 0;
  },
};

// Pillow's HAMMING: a Hamming-windowed sinc, support 1. Its constants are C float literals
// (0.54f, 0.46f), so they enter the double arithmetic as their float32 values.
const HAMMING_A = Math.fround(0.54);
const HAMMING_B = Math.fround(0.46);
const hamming: Kernel = {
  support: 1,
  weight(x) {
    if (x < 0) x = -x;
    if (x === 0) return 1;
    if (x >= 1) return 0;
    x *= Math.PI;
    return (Math.sin(x) / x) * (HAMMING_A + HAMMING_B * Math.cos(x));
  },
};

function sinc(x: number): number {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

// Pillow's LANCZOS: sinc(x) * sinc(x / 3) on [-3, 3), support 3.
const lanczos: Kernel = {
  support: 3,
  weight(x) {
    return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
  },
};

const KERNELS: Record<Exclude<ResampleFilter, 'nearest'>, Kernel> = { bicubic, bilinear, box, hamming, lanczos };

/**
 * Windows of the output pixels first .. first + length - 1 of one axis: output pixel first + i
 * reads `count[i]` input pixels from `start[i]`.
 */
export interface AxisCoefficients {
  /** Weights per output pixel (the row stride of `weights`). */
  kernelSize: number;
  start: Int32Array;
  count: Int32Array;
  /** outSize * kernelSize fixed-point weights; entries past count[i] are 0. */
  weights: Int32Array;
}

/**
 * Windows for output pixels [first, first + length) of an inSize -> outSize resize. Each window
 * depends only on its own output index, so a sub-range (a crop of the output) costs only its
 * own length and gives the same weights as the full axis.
 */
export function computeAxisCoefficients(
  inSize: number,
  outSize: number,
  filter: Exclude<ResampleFilter, 'nearest'>,
  first = 0,
  length = outSize - first,
): AxisCoefficients {
  const kernel = KERNELS[filter];
  const scale = inSize / outSize;
  const filterScale = scale < 1 ? 1 : scale;
  const support = kernel.support * filterScale;
  const kernelSize = Math.ceil(support) * 2 + 1;
  const invFilterScale = 1 / filterScale;

  const start = new Int32Array(length);
  const count = new Int32Array(length);
  const weights = new Int32Array(length * kernelSize);
  const window = new Float64Array(kernelSize);
  const one = 1 << PRECISION_BITS;

  for (let j = 0; j < length; j++) {
    const center = (first + j + 0.5) * scale;
    // Truncation (not floor) mirrors a C int cast; the clamp below makes the difference moot.
    let lo = Math.trunc(center - support + 0.5);
    if (lo < 0) lo = 0;
    let hi = Math.trunc(center + support + 0.5);
    if (hi > inSize) hi = inSize;
    const n = hi - lo;

    let sum = 0;
    for (let i = 0; i < n; i++) {
      const w = kernel.weight((i + lo - center + 0.5) * invFilterScale);
      window[i] = w;
      sum += w;
    }
    const row = j * kernelSize;
    for (let i = 0; i < n; i++) {
      const w = sum !== 0 ? window[i] / sum : window[i];
      // Round half away from zero, as `(int)(w * one +/- 0.5)` does in C.
      weights[row + i] = w < 0 ? Math.trunc(-0.5 + w * one) : Math.trunc(0.5 + w * one);
    }
    start[j] = lo;
    count[j] = n;
  }
  return { kernelSize, start, count, weights };
}
