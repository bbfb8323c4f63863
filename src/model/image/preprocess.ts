// Decoded RGB image -> the vision encoder's pixel_values, exactly as the reference does it:
//
//   [pad to square] -> resize (PIL, uint8) -> [centre crop] -> x * rescale_factor -> (x - mean) / std
//
// The float steps copy HF's numpy arithmetic so the float32 result is bit-identical to HF's
// `pixel_values`: `rescale` multiplies in float64 and casts to float32; `normalize` subtracts
// and divides in float32 with mean and std cast to float32 first. (Math.fround after each
// double operation gives the float32 result, since a double holds a float32 sum, difference,
// product or quotient exactly enough to round it once, correctly.)
//
// Pure functions on buffers: the runtime may run them in a worker thread. Memory stays bounded
// by the output size and the input's longest side (decodeImage limits both): the padded canvas
// is never drawn and a crop computes only the kept pixels.

import type { ImagePreprocessing } from '../manifest-types.js';
import { planResize } from './geometry.js';
import { resizeRgb } from './resample.js';
import type { RgbImage } from './rgb-image.js';

export interface PixelValues {
  /** CHW float32, the vision encoder's `pixel_values` for one image: [3, height, width]. */
  data: Float32Array;
  dims: [3, number, number];
}

export interface PreprocessedImage {
  /** The uint8 image after pad/resize/crop, before rescale/normalise (the golden pixel files). */
  pixels: RgbImage;
  pixelValues: PixelValues;
}

/** Pad, resize and crop: the uint8 image the reference has right before rescaling. */
export function resizeForModel(image: RgbImage, pp: ImagePreprocessing): RgbImage {
  const plan = planResize(image.width, image.height, pp);
  return resizeRgb(image, plan.resize.width, plan.resize.height, pp.resample, {
    canvas: plan.canvas,
    region: plan.region,
  });
}

/** HWC uint8 -> CHW float32, `(x * rescale_factor - mean) / std` with HF's float semantics. */
export function normalizeToChw(image: RgbImage, pp: ImagePreprocessing): PixelValues {
  const { width, height, data } = image;
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  const scale = pp.rescale_factor;
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(pp.image_mean[c]);
    const std = Math.fround(pp.image_std[c]);
    // Only 256 possible inputs per channel: tabulate them once.
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) {
      const rescaled = Math.fround(v * scale);
      table[v] = Math.fround(Math.fround(rescaled - mean) / std);
    }
    const base = c * plane;
    for (let i = 0, si = c; i < plane; i++, si += 3) out[base + i] = table[data[si]];
  }
  return { data: out, dims: [3, height, width] };
}

export function preprocessImage(image: RgbImage, pp: ImagePreprocessing): PreprocessedImage {
  const pixels = resizeForModel(image, pp);
  return { pixels, pixelValues: normalizeToChw(pixels, pp) };
}
