// A bit-exact port of the algorithm behind PIL's `Image.resize` for 8-bit RGB images, in plain
// TypeScript on raw buffers (written from the algorithm's description, not from Pillow's code).
//
// Why not sharp/libvips: the reference preprocessing of every TinyLLaVA checkpoint is PIL's
// BICUBIC resize; libvips differs by up to 27 units when shrinking and shifts enlarged images by
// half a pixel. This module reproduces PIL byte for byte:
//
//   canvas (W x H) --horizontal pass--> W' x H (uint8, clipped) --vertical pass--> W' x H'
//
// - Separable convolution, horizontal first; the intermediate is rounded and clipped to uint8,
//   which is part of the result (doing both passes in float gives different bytes).
// - Pillow skips a pass whose dimension does not change. Running it instead is the identity
//   (the window's only non-zero weight is exactly 1.0 in fixed point), so only the case where
//   nothing changes is short-cut (to a copy).
// - The horizontal pass only runs over the canvas rows the vertical windows read.
// - NEAREST is not a convolution in Pillow: it samples floor((x + 0.5) * scale).
//
// Two extensions keep memory and time bounded for hostile aspect ratios, without changing a byte:
// - `canvas`: the image pasted on a larger fill-coloured canvas (pad-to-square) is never
//   materialised; fill pixels enter the sums as fill * weight (integer sums: order-free).
// - `region`: only a window of the output is computed (resize-then-centre-crop); parts of the
//   region outside the output are 0, like HF's `center_crop` pads a too-small image with zeros.
//
// Pure and synchronous: safe to call inside a worker thread.

import {
  computeAxisCoefficients,
  PRECISION_BITS,
  type AxisCoefficients,
  type ResampleFilter,
} from './resample-coefficients.js';
import { assertRgbImage, createRgbImage, type RgbImage } from './rgb-image.js';

export type { ResampleFilter } from './resample-coefficients.js';

/** `Image.new('RGB', (width, height), fill).paste(image, (left, top))`, described, not drawn. */
export interface PaddedCanvas {
  width: number;
  height: number;
  left: number;
  top: number;
  fill: readonly [number, number, number];
}

/** A rectangle of the resized output, in output pixels; it may reach outside the output. */
export interface OutputRegion {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface ResizeOptions {
  canvas?: PaddedCanvas;
  region?: OutputRegion;
}

// Accumulators start at one half (in fixed point) so that the final shift rounds to nearest.
const HALF = 1 << (PRECISION_BITS - 1);

/** Shift a fixed-point sum back to 8 bits and clip it to 0..255. */
function clip8(sum: number): number {
  const v = sum >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** The image on its canvas, with the default canvas being the image itself. */
interface Source {
  image: RgbImage;
  width: number;
  height: number;
  left: number;
  top: number;
  fill: readonly [number, number, number];
}

/** A half-open index range [lo, hi). */
interface Span {
  lo: number;
  hi: number;
}

/**
 * Resizes `image` to width x height exactly as PIL's `Image.resize((width, height), filter)`
 * (on the padded canvas, if one is given), returning `region` of the result (default: all).
 */
export function resizeRgb(
  image: RgbImage,
  width: number,
  height: number,
  filter: ResampleFilter,
  options: ResizeOptions = {},
): RgbImage {
  assertRgbImage(image);
  assertPositiveInts('resize target', width, height);
  const src = toSource(image, options.canvas);
  const region = options.region ?? { left: 0, top: 0, width, height };
  assertPositiveInts('output region', region.width, region.height);
  if (!Number.isInteger(region.left) || !Number.isInteger(region.top)) {
    throw new RangeError(`output region offset must be integers, got (${region.left}, ${region.top})`);
  }

  const out = createRgbImage(region.width, region.height); // zeros outside the output
  const xs = clampSpan(region.left, region.width, width);
  const ys = clampSpan(region.top, region.height, height);
  if (xs.hi <= xs.lo || ys.hi <= ys.lo) return out;

  // Same size: every filter is the identity, and so is NEAREST's index map (floor(i + 0.5)).
  const same = width === src.width && height === src.height;
  const block =
    filter === 'nearest' || same
      ? resizeNearest(src, width, height, xs, ys)
      : resizeConvolve(src, width, height, filter, xs, ys);
  blit(block, out, xs.lo - region.left, ys.lo - region.top);
  return out;
}

function resizeConvolve(
  src: Source,
  width: number,
  height: number,
  filter: Exclude<ResampleFilter, 'nearest'>,
  xs: Span,
  ys: Span,
): RgbImage {
  const horizontal = computeAxisCoefficients(src.width, width, filter, xs.lo, xs.hi - xs.lo);
  const vertical = computeAxisCoefficients(src.height, height, filter, ys.lo, ys.hi - ys.lo);
  const last = vertical.start.length - 1;
  // Canvas rows the vertical windows read, and the image rows among them.
  const firstRow = vertical.start[0];
  const endRow = vertical.start[last] + vertical.count[last];
  const imageRows = {
    lo: Math.max(firstRow, src.top),
    hi: Math.min(endRow, src.top + src.image.height),
  };
  const rows = horizontalPass(src, horizontal, imageRows);
  const fillRow = horizontalFillRow(src.fill, horizontal);
  return verticalPass(rows, fillRow, vertical, imageRows);
}

/** Image rows `canvasRows` (canvas coordinates), each resampled horizontally. */
function horizontalPass(src: Source, c: AxisCoefficients, canvasRows: Span): RgbImage {
  const outWidth = c.start.length;
  const out = createRgbImage(outWidth, Math.max(0, canvasRows.hi - canvasRows.lo));
  const { kernelSize, start, count, weights } = c;
  const [fillR, fillG, fillB] = src.fill;
  const imageLeft = src.left;
  const imageRight = src.left + src.image.width;
  const inStride = src.image.width * 3;
  const s = src.image.data;
  const d = out.data;
  let di = 0;
  for (let y = canvasRows.lo; y < canvasRows.hi; y++) {
    const rowBase = (y - src.top) * inStride;
    for (let x = 0; x < outWidth; x++) {
      const k0 = x * kernelSize;
      const lo = start[x];
      const hi = lo + count[x];
      // Window columns inside the image: [a, b); the rest are fill.
      const a = lo > imageLeft ? lo : imageLeft;
      const b = hi < imageRight ? hi : imageRight;
      let r = HALF;
      let g = HALF;
      let bl = HALF;
      // `| 0` keeps V8 on int32 arithmetic; the sums fit (Pillow relies on the same bound),
      // and wrapping int32 addition is associative, so the order of the three parts is free.
      for (let k = k0 + a - lo, si = rowBase + (a - imageLeft) * 3, kEnd = k0 + b - lo; k < kEnd; k++, si += 3) {
        const w = weights[k];
        r = (r + s[si] * w) | 0;
        g = (g + s[si + 1] * w) | 0;
        bl = (bl + s[si + 2] * w) | 0;
      }
      if (a > lo || b < hi) {
        let fillWeight = 0;
        for (let k = k0; k < k0 + count[x]; k++) {
          const col = lo + k - k0;
          if (col < a || col >= b) fillWeight += weights[k];
        }
        r = (r + fillR * fillWeight) | 0;
        g = (g + fillG * fillWeight) | 0;
        bl = (bl + fillB * fillWeight) | 0;
      }
      d[di++] = clip8(r);
      d[di++] = clip8(g);
      d[di++] = clip8(bl);
    }
  }
  return out;
}

/** What the horizontal pass makes of a canvas row that is all fill. */
function horizontalFillRow(fill: readonly [number, number, number], c: AxisCoefficients): Uint8Array {
  const outWidth = c.start.length;
  const row = new Uint8Array(outWidth * 3);
  for (let x = 0; x < outWidth; x++) {
    let sum = 0;
    for (let k = x * c.kernelSize, kEnd = k + c.count[x]; k < kEnd; k++) sum += c.weights[k];
    for (let ch = 0; ch < 3; ch++) row[x * 3 + ch] = clip8((HALF + fill[ch] * sum) | 0);
  }
  return row;
}

/**
 * Resamples columns: canvas row y is row y - imageRows.lo of `rows` inside `imageRows`, and
 * `fillRow` outside it.
 */
function verticalPass(rows: RgbImage, fillRow: Uint8Array, c: AxisCoefficients, imageRows: Span): RgbImage {
  const outHeight = c.start.length;
  const out = createRgbImage(rows.width, outHeight);
  const { kernelSize, start, count, weights } = c;
  const stride = rows.width * 3;
  const d = out.data;
  // One output row at a time, accumulating whole input rows: sequential memory access.
  const acc = new Int32Array(stride);
  for (let y = 0; y < outHeight; y++) {
    const k0 = y * kernelSize;
    acc.fill(HALF);
    for (let i = 0; i < count[y]; i++) {
      const w = weights[k0 + i];
      const canvasRow = start[y] + i;
      const inside = canvasRow >= imageRows.lo && canvasRow < imageRows.hi;
      const s = inside ? rows.data : fillRow;
      const base = inside ? (canvasRow - imageRows.lo) * stride : 0;
      for (let xc = 0; xc < stride; xc++) acc[xc] = (acc[xc] + s[base + xc] * w) | 0;
    }
    const outBase = y * stride;
    for (let xc = 0; xc < stride; xc++) d[outBase + xc] = clip8(acc[xc]);
  }
  return out;
}

// Pillow resizes with NEAREST by an affine scale: output pixel i samples input pixel
// floor(x_i) with x_0 = scale / 2 and x_{i+1} = x_i + scale: the position is accumulated by
// repeated addition (not recomputed), and its rounding is reproduced here.
function nearestIndices(inSize: number, outSize: number, span: Span): Int32Array {
  const scale = inSize / outSize;
  const idx = new Int32Array(span.hi - span.lo);
  let pos = scale * 0.5;
  for (let i = 0; i < span.hi; i++) {
    if (i >= span.lo) {
      const v = Math.trunc(pos);
      idx[i - span.lo] = v < 0 ? 0 : v >= inSize ? inSize - 1 : v;
    }
    pos += scale;
  }
  return idx;
}

function resizeNearest(src: Source, width: number, height: number, xs: Span, ys: Span): RgbImage {
  const out = createRgbImage(xs.hi - xs.lo, ys.hi - ys.lo);
  const cols = nearestIndices(src.width, width, xs);
  const rows = nearestIndices(src.height, height, ys);
  const { image, fill } = src;
  const d = out.data;
  let di = 0;
  for (const canvasY of rows) {
    const iy = canvasY - src.top;
    for (const canvasX of cols) {
      const ix = canvasX - src.left;
      if (iy >= 0 && iy < image.height && ix >= 0 && ix < image.width) {
        const si = (iy * image.width + ix) * 3;
        d[di++] = image.data[si];
        d[di++] = image.data[si + 1];
        d[di++] = image.data[si + 2];
      } else {
        d[di++] = fill[0];
        d[di++] = fill[1];
        d[di++] = fill[2];
      }
    }
  }
  return out;
}

function toSource(image: RgbImage, canvas: PaddedCanvas | undefined): Source {
  if (!canvas) return { image, width: image.width, height: image.height, left: 0, top: 0, fill: [0, 0, 0] };
  assertPositiveInts('canvas', canvas.width, canvas.height);
  const inside =
    Number.isInteger(canvas.left) &&
    Number.isInteger(canvas.top) &&
    canvas.left >= 0 &&
    canvas.top >= 0 &&
    canvas.left + image.width <= canvas.width &&
    canvas.top + image.height <= canvas.height;
  if (!inside) {
    throw new RangeError(
      `image ${image.width}x${image.height} at (${canvas.left}, ${canvas.top}) does not fit its canvas ${canvas.width}x${canvas.height}`,
    );
  }
  if (!canvas.fill.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)) {
    throw new RangeError(`canvas fill must be 3 integers in 0..255, got ${JSON.stringify(canvas.fill)}`);
  }
  return { image, ...canvas };
}

/** The part of [start, start + length) that lies in [0, size). */
function clampSpan(start: number, length: number, size: number): Span {
  return { lo: Math.max(0, start), hi: Math.min(size, start + length) };
}

/** Copies `block` into `dst` with its top-left corner at (left, top). */
function blit(block: RgbImage, dst: RgbImage, left: number, top: number): void {
  const rowBytes = block.width * 3;
  for (let y = 0; y < block.height; y++) {
    const from = y * rowBytes;
    dst.data.set(block.data.subarray(from, from + rowBytes), ((top + y) * dst.width + left) * 3);
  }
}

function assertPositiveInts(what: string, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`${what} must be positive integers, got ${width}x${height}`);
  }
}
