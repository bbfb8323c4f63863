// Times the PIL-exact resampler and the whole preprocessing on synthetic noise images:
//   npm run build && node dist/bench/resample.js
// Prints min / median of several runs per case (single-threaded CPU work).

import { preprocessImage } from '../src/model/image/preprocess.js';
import { resizeRgb } from '../src/model/image/resample.js';
import type { RgbImage } from '../src/model/image/rgb-image.js';
import type { ImagePreprocessing } from '../src/model/manifest-types.js';

function noise(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  let s = 1;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { width, height, data };
}

/** "min / median ms" over `times` runs after a warm-up (min is the one to trust on a busy machine). */
function timeMs(run: () => void, times: number): string {
  run(); // warm-up: JIT
  const samples: number[] = [];
  for (let i = 0; i < times; i++) {
    const start = performance.now();
    run();
    samples.push(performance.now() - start);
  }
  samples.sort((a, b) => a - b);
  return `${samples[0].toFixed(1)} / ${samples[samples.length >> 1].toFixed(1)} ms`;
}

const siglip: ImagePreprocessing = {
  pad_to_square: false,
  pad_color: null,
  resize_mode: 'squash',
  size: { height: 384, width: 384 },
  shortest_edge: null,
  resample: 'bicubic',
  rescale_factor: 1 / 255,
  image_mean: [0.5, 0.5, 0.5],
  image_std: [0.5, 0.5, 0.5],
};
const clip: ImagePreprocessing = {
  ...siglip,
  resize_mode: 'shortest_edge_center_crop',
  size: { height: 336, width: 336 },
  shortest_edge: 336,
  image_mean: [0.48145466, 0.4578275, 0.40821073],
  image_std: [0.26862954, 0.26130258, 0.27577711],
};

for (const [w, h] of [
  [1024, 768],
  [4000, 3000],
  [100, 80],
]) {
  const image = noise(w, h);
  const times = w * h > 4e6 ? 7 : 21;
  const resize = timeMs(() => resizeRgb(image, 384, 384, 'bicubic'), times);
  const sig = timeMs(() => preprocessImage(image, siglip), times);
  const cl = timeMs(() => preprocessImage(image, clip), times);
  console.log(`${w}x${h}: resize to 384x384 bicubic ${resize}; SigLIP preprocess ${sig}; CLIP preprocess (336 crop) ${cl}`);
}
