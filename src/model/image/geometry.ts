// Where the pixels of the final vision-encoder input come from: the pad-to-square canvas, the
// resize target and the crop window, computed with the integer arithmetic of the reference
// (TinyLLaVA's expand2square, HF's get_resize_output_image_size and center_crop).

import type { ImagePreprocessing } from '../manifest-types.js';
import type { OutputRegion, PaddedCanvas } from './resample.js';

export interface ResizePlan {
  /** Set when the image is first pasted onto a square canvas. */
  canvas?: PaddedCanvas;
  /** The full resize target (before any crop). */
  resize: { width: number; height: number };
  /** The part of the resized image that is kept: the pipeline's output. */
  region: OutputRegion;
}

export function planResize(width: number, height: number, pp: ImagePreprocessing): ResizePlan {
  let canvas: PaddedCanvas | undefined;
  if (pp.pad_to_square && width !== height) {
    if (!pp.pad_color) throw new RangeError('pad_to_square needs pad_color');
    // expand2square: the image centred on the long side, offsets floored.
    const side = Math.max(width, height);
    canvas = {
      width: side,
      height: side,
      left: Math.floor((side - width) / 2),
      top: Math.floor((side - height) / 2),
      fill: pp.pad_color,
    };
  }
  const w = canvas ? canvas.width : width;
  const h = canvas ? canvas.height : height;
  const out = pp.size;

  if (pp.resize_mode === 'squash') {
    return { canvas, resize: { width: out.width, height: out.height }, region: fullRegion(out.width, out.height) };
  }
  if (pp.resize_mode === 'squash_center_crop') {
    if (!pp.resize_size) throw new RangeError('squash_center_crop needs resize_size');
    return { canvas, resize: { ...pp.resize_size }, region: centreCrop(pp.resize_size, out) };
  }

  if (pp.shortest_edge === null) throw new RangeError('shortest_edge_center_crop needs shortest_edge');
  // HF: the short side becomes shortest_edge, the long side int(shortest_edge * long / short),
  // i.e. a float division truncated (not rounded).
  const se = pp.shortest_edge;
  const resize =
    w <= h ? { width: se, height: Math.trunc((se * h) / w) } : { width: Math.trunc((se * w) / h), height: se };
  return { canvas, resize, region: centreCrop(resize, out) };
}

/**
 * HF's center_crop: offsets (size - crop) // 2, floored. When the resized image is smaller than
 * the crop, HF pads it with zeros so that the same offsets (now negative) still apply.
 */
function centreCrop(resized: { width: number; height: number }, out: { width: number; height: number }): OutputRegion {
  return {
    left: Math.floor((resized.width - out.width) / 2),
    top: Math.floor((resized.height - out.height) / 2),
    width: out.width,
    height: out.height,
  };
}

function fullRegion(width: number, height: number): OutputRegion {
  return { left: 0, top: 0, width, height };
}
