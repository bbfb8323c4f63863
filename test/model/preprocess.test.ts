// Geometry and float arithmetic of the preprocessing pipeline. Expected pixel_values were made
// by transformers 4.46.3's slow image processors on the 7x5 synthetic image of
// resample.test.ts and pasted (float32 values printed exactly via float()):
//
//   p = CLIPImageProcessor(size={'shortest_edge':4}, crop_size={'height':3,'width':3},
//                          image_mean=CLIP_MEAN, image_std=CLIP_STD)
//   print([float(x) for x in p(images=im, return_tensors='np')['pixel_values'][0].ravel()])
//   p2 = SiglipImageProcessor(size={'height':2,'width':3}, image_mean=[0.5]*3, image_std=[0.5]*3)

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planResize } from '../../src/model/image/geometry.js';
import { normalizeToChw, preprocessImage, resizeForModel } from '../../src/model/image/preprocess.js';
import { resizeRgb } from '../../src/model/image/resample.js';
import type { RgbImage } from '../../src/model/image/rgb-image.js';
import type { ImagePreprocessing } from '../../src/model/manifest-types.js';

const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

function settings(overrides: Partial<ImagePreprocessing>): ImagePreprocessing {
  return {
    pad_to_square: false,
    pad_color: null,
    resize_mode: 'squash',
    size: { height: 384, width: 384 },
    shortest_edge: null,
    resample: 'bicubic',
    rescale_factor: 0.00392156862745098,
    image_mean: [0.5, 0.5, 0.5],
    image_std: [0.5, 0.5, 0.5],
    ...overrides,
  };
}

const clip336 = settings({
  resize_mode: 'shortest_edge_center_crop',
  shortest_edge: 336,
  size: { height: 336, width: 336 },
  image_mean: CLIP_MEAN,
  image_std: CLIP_STD,
});

function synthetic(w = 7, h = 5): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      data.set([(x * 37 + y * 11) % 256, (x * x * 5 + y * 23) % 256, ((x + 1) * (y + 3) * 13) % 256], (y * w + x) * 3);
    }
  }
  return { width: w, height: h, data };
}

describe('planResize', () => {
  it('squash stretches to the size, no crop', () => {
    assert.deepEqual(planResize(640, 480, settings({})), {
      canvas: undefined,
      resize: { width: 384, height: 384 },
      region: { left: 0, top: 0, width: 384, height: 384 },
    });
  });

  it('CLIP: short side to 336, long side truncated, crop offsets floored', () => {
    // int(336 * 1001 / 299) = 1124 (1124.9...), (1124 - 336) // 2 = 394
    assert.deepEqual(planResize(1001, 299, clip336), {
      canvas: undefined,
      resize: { width: 1124, height: 336 },
      region: { left: 394, top: 0, width: 336, height: 336 },
    });
    assert.deepEqual(planResize(300, 500, clip336).resize, { width: 336, height: 560 });
    assert.deepEqual(planResize(300, 500, clip336).region, { left: 0, top: 112, width: 336, height: 336 });
  });

  it('squash_center_crop: squash to resize_size, then a floored centre crop (CLIP with height/width size)', () => {
    const pp = settings({ resize_mode: 'squash_center_crop', resize_size: { height: 240, width: 255 }, size: { height: 196, width: 196 } });
    assert.deepEqual(planResize(640, 480, pp), {
      canvas: undefined,
      resize: { width: 255, height: 240 },
      region: { left: 29, top: 22, width: 196, height: 196 },
    });
  });

  it('crops a too-small resize with negative offsets (HF pads with zeros)', () => {
    const pp = { ...clip336, shortest_edge: 300 };
    assert.deepEqual(planResize(400, 300, pp).region, { left: 32, top: -18, width: 336, height: 336 });
    assert.deepEqual(planResize(400, 300, pp).resize, { width: 400, height: 300 });
  });

  it('pads to a square like expand2square: image centred, offsets floored', () => {
    const pp = settings({ pad_to_square: true, pad_color: [127, 127, 127] });
    assert.deepEqual(planResize(7, 4, pp).canvas, { width: 7, height: 7, left: 0, top: 1, fill: [127, 127, 127] });
    assert.deepEqual(planResize(4, 7, pp).canvas, { width: 7, height: 7, left: 1, top: 0, fill: [127, 127, 127] });
    assert.equal(planResize(5, 5, pp).canvas, undefined);
  });
});

describe('preprocessImage against HF', () => {
  it('CLIPImageProcessor: shortest edge 4, crop 3x3', () => {
    const pp = settings({ resize_mode: 'shortest_edge_center_crop', shortest_edge: 4, size: { height: 3, width: 3 }, image_mean: CLIP_MEAN, image_std: CLIP_STD });
    const { pixelValues } = preprocessImage(synthetic(), pp);
    assert.deepEqual(pixelValues.dims, [3, 3, 3]);
    assert.deepEqual(Array.from(pixelValues.data), [
      -0.9163569211959839, -0.1426403522491455, 0.6310762763023376, -0.7265773415565491, 0.047139182686805725, 0.8208557963371277, -0.5221993923187256, 0.25151723623275757, 1.0252337455749512,
      -1.5269806385040283, -1.0317243337631226, -0.2213047444820404, -1.1067631244659424, -0.6115067005157471, 0.1989128440618515, -0.65652996301651, -0.16127367317676544, 0.6341381072998047,
      0.02710723504424095, 0.8803112506866455, 1.0793921947479248, 0.6670103073120117, 0.19774802029132843, -0.9540772438049316, 1.3353533744812012, -0.5559154152870178, 0.6101300120353699,
    ]);
  });

  it('SiglipImageProcessor: squash to 3x2', () => {
    const { pixels, pixelValues } = preprocessImage(synthetic(), settings({ size: { height: 2, width: 3 } }));
    assert.deepEqual([pixels.width, pixels.height], [3, 2]);
    assert.deepEqual(pixelValues.dims, [3, 2, 3]);
    assert.deepEqual(Array.from(pixelValues.data), [
      -0.7176470756530762, -0.05882352590560913, 0.6235294342041016, -0.5137255191802979, 0.16078436374664307, 0.5372549295425415,
      -0.8196078538894653, -0.4823529124259949, 0.27843141555786133, -0.4117646813392639, -0.04313725233078003, 0.3960784673690796,
      -0.26274508237838745, 0.035294175148010254, -0.1294117569923401, 0.003921627998352051, -0.12156862020492554, -0.05882352590560913,
    ]);
  });
});

describe('resizeForModel', () => {
  it('crop mode equals a full resize followed by the crop', () => {
    const image = synthetic(23, 11);
    const pp = settings({ resize_mode: 'shortest_edge_center_crop', shortest_edge: 9, size: { height: 9, width: 9 } });
    const full = resizeRgb(image, 18, 9, 'bicubic'); // int(9 * 23 / 11) = 18
    const crop = resizeForModel(image, pp);
    for (let y = 0; y < 9; y++) {
      const from = (y * 18 + 4) * 3; // left offset (18 - 9) // 2 = 4
      assert.deepEqual(crop.data.subarray(y * 27, y * 27 + 27), full.data.subarray(from, from + 27));
    }
  });
});

describe('normalizeToChw', () => {
  it('rescales in float64, casts to float32, then normalises in float32', () => {
    const pp = settings({ image_mean: CLIP_MEAN, image_std: CLIP_STD });
    const image = { width: 1, height: 1, data: Uint8Array.of(0, 128, 255) };
    const out = normalizeToChw(image, pp);
    const f = Math.fround;
    for (let c = 0; c < 3; c++) {
      const x = f(image.data[c] * pp.rescale_factor);
      assert.equal(out.data[c], f(f(x - f(CLIP_MEAN[c])) / f(CLIP_STD[c])));
    }
    assert.deepEqual(out.dims, [3, 1, 1]);
  });

  it('writes planes in CHW order', () => {
    const image = { width: 2, height: 1, data: Uint8Array.of(255, 0, 0, 0, 255, 0) };
    const out = normalizeToChw(image, settings({}));
    assert.deepEqual(Array.from(out.data), [1, -1, -1, 1, -1, -1]);
  });
});
