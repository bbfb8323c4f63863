// The PIL-compatible resampler. Exactness against PIL on real images is covered by the golden
// pixel test (golden.test.ts); this file pins small cases whose expected bytes were produced
// by Pillow 9.4 and pasted here, so it runs without Python or fixtures. They were made with:
//
//   .venv/bin/python -c "import numpy as np; from PIL import Image; w,h=7,5;
//     a=np.array([[[(x*37+y*11)%256,(x*x*5+y*23)%256,((x+1)*(y+3)*13)%256] for x in range(w)]
//       for y in range(h)],dtype=np.uint8); im=Image.fromarray(a,'RGB');
//     print(list(np.asarray(im.resize((3,2),Image.BICUBIC)).ravel()))"   # etc. per case
//   (BOX, HAMMING, LANCZOS likewise)
//
// and, for the padded case, Image.new('RGB',(7,7),(127,127,127)).paste(im,(0,1)) first.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resizeRgb, type ResampleFilter } from '../../src/model/image/resample.js';
import { computeAxisCoefficients, PRECISION_BITS } from '../../src/model/image/resample-coefficients.js';
import type { RgbImage } from '../../src/model/image/rgb-image.js';

function synthetic(w = 7, h = 5): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      data[i] = (x * 37 + y * 11) % 256;
      data[i + 1] = (x * x * 5 + y * 23) % 256;
      data[i + 2] = ((x + 1) * (y + 3) * 13) % 256;
    }
  }
  return { width: w, height: h, data };
}

/** Pseudo-random bytes, for property tests. */
function noise(w: number, h: number, seed = 1): RgbImage {
  const data = new Uint8Array(w * h * 3);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { width: w, height: h, data };
}

const PIL_CASES: { size: [number, number]; filter: ResampleFilter; expected: number[] }[] = [
  { size: [3, 2], filter: 'bicubic', expected: [36, 23, 94, 120, 66, 132, 207, 163, 111, 62, 75, 128, 148, 122, 112, 196, 178, 120] },
  {
    size: [11, 8],
    filter: 'bicubic',
    expected: [
      0, 0, 35, 12, 0, 52, 39, 4, 80, 63, 13, 103, 86, 26, 127, 110, 43, 152, 134, 64, 189, 157, 89, 228, 181, 118, 254, 208, 158, 110, 224, 182, 0, 3, 8, 40, 17, 9, 59, 44, 14, 91, 68, 23, 117, 91, 36, 155, 115, 53, 187, 139, 74, 139, 162, 99, 125, 186, 128, 161, 213, 168, 97, 229, 192, 41, 9, 24, 49, 25, 25, 72, 52, 30, 111, 76, 39, 145, 99, 52, 186, 123, 69, 202, 147, 90, 66, 170, 115, 0, 194, 144, 47, 221, 184, 92, 237, 208, 119, 15, 39, 56, 32, 40, 83, 59, 45, 128, 83, 54, 180, 106, 67, 147, 130, 84, 57, 154, 105, 36, 177, 130, 51, 201, 159, 94, 228, 199, 156, 244, 223, 196, 22, 53, 64, 38, 54, 94, 65, 59, 146, 89, 68, 216, 112, 81, 147, 136, 98, 1, 160, 119, 46, 183, 144, 114, 207, 173, 163, 239, 218, 165, 255, 246, 157, 29, 68, 72, 45, 69, 105, 72, 74, 163, 96, 83, 235, 119, 96, 179, 143, 113, 52, 167, 134, 90, 190, 158, 159, 214, 187, 217, 245, 232, 115, 255, 255, 25, 37, 84, 81, 53, 85, 126, 80, 90, 173, 104, 99, 123, 127, 112, 91, 151, 129, 90, 175, 150, 152, 202, 179, 168, 228, 210, 113, 158, 153, 89, 101, 102, 78, 42, 94, 86, 58, 95, 139, 85, 100, 177, 109, 109, 37, 132, 122, 20, 156, 139, 112, 180, 160, 191, 210, 192, 166, 236, 224, 27, 93, 93, 77, 0, 0, 139,
    ],
  },
  { size: [4, 3], filter: 'bilinear', expected: [24, 13, 68, 82, 34, 137, 150, 89, 141, 208, 162, 102, 41, 49, 99, 99, 70, 145, 167, 125, 80, 225, 198, 135, 58, 85, 123, 116, 106, 115, 184, 161, 135, 166, 158, 101] },
  {
    size: [5, 9],
    filter: 'nearest',
    expected: [
      0, 0, 39, 74, 20, 117, 111, 45, 156, 148, 80, 195, 222, 180, 17, 0, 0, 39, 74, 20, 117, 111, 45, 156, 148, 80, 195, 222, 180, 17, 11, 23, 52, 85, 43, 156, 122, 68, 208, 159, 103, 4, 233, 203, 108, 11, 23, 52, 85, 43, 156, 122, 68, 208, 159, 103, 4, 233, 203, 108, 22, 46, 65, 96, 66, 195, 133, 91, 4, 170, 126, 69, 244, 226, 199, 33, 69, 78, 107, 89, 234, 144, 114, 56, 181, 149, 134, 255, 249, 34, 33, 69, 78, 107, 89, 234, 144, 114, 56, 181, 149, 134, 255, 249, 34, 44, 92, 91, 118, 112, 17, 155, 137, 108, 192, 172, 199, 10, 16, 125, 44, 92, 91, 118, 112, 17, 155, 137, 108, 192, 172, 199, 10, 16, 125,
    ],
  },
  {
    // Width unchanged: Pillow skips the horizontal pass.
    size: [7, 3],
    filter: 'bicubic',
    expected: [4, 8, 44, 41, 13, 87, 78, 28, 131, 115, 53, 182, 152, 88, 112, 189, 133, 155, 226, 188, 57, 22, 46, 65, 59, 51, 130, 96, 66, 205, 133, 91, 58, 170, 126, 59, 207, 171, 134, 254, 236, 145, 40, 84, 86, 77, 89, 173, 114, 104, 110, 151, 129, 82, 188, 164, 176, 225, 209, 113, 112, 114, 85],
  },
  // Pillow's BOX, HAMMING and LANCZOS, which tower processors may name (resample 4, 5, 1).
  { size: [3, 2], filter: 'box', expected: [30, 26, 78, 122, 71, 123, 215, 176, 125, 58, 84, 127, 150, 129, 125, 179, 170, 102] },
  { size: [11, 8], filter: 'box', expected: [0, 0, 39, 0, 0, 39, 37, 5, 78, 74, 20, 117, 74, 20, 117, 111, 45, 156, 148, 80, 195, 148, 80, 195, 185, 125, 234, 222, 180, 17, 222, 180, 17, 0, 0, 39, 0, 0, 39, 37, 5, 78, 74, 20, 117, 74, 20, 117, 111, 45, 156, 148, 80, 195, 148, 80, 195, 185, 125, 234, 222, 180, 17, 222, 180, 17, 11, 23, 52, 11, 23, 52, 48, 28, 104, 85, 43, 156, 85, 43, 156, 122, 68, 208, 159, 103, 4, 159, 103, 4, 196, 148, 56, 233, 203, 108, 233, 203, 108, 22, 46, 65, 22, 46, 65, 59, 51, 130, 96, 66, 195, 96, 66, 195, 133, 91, 4, 170, 126, 69, 170, 126, 69, 207, 171, 134, 244, 226, 199, 244, 226, 199, 22, 46, 65, 22, 46, 65, 59, 51, 130, 96, 66, 195, 96, 66, 195, 133, 91, 4, 170, 126, 69, 170, 126, 69, 207, 171, 134, 244, 226, 199, 244, 226, 199, 33, 69, 78, 33, 69, 78, 70, 74, 156, 107, 89, 234, 107, 89, 234, 144, 114, 56, 181, 149, 134, 181, 149, 134, 218, 194, 212, 255, 249, 34, 255, 249, 34, 44, 92, 91, 44, 92, 91, 81, 97, 182, 118, 112, 17, 118, 112, 17, 155, 137, 108, 192, 172, 199, 192, 172, 199, 229, 217, 34, 10, 16, 125, 10, 16, 125, 44, 92, 91, 44, 92, 91, 81, 97, 182, 118, 112, 17, 118, 112, 17, 155, 137, 108, 192, 172, 199, 192, 172, 199, 229, 217, 34, 10, 16, 125, 10, 16, 125] },
  { size: [4, 3], filter: 'hamming', expected: [20, 11, 63, 83, 33, 137, 147, 85, 140, 210, 166, 100, 38, 48, 93, 101, 70, 153, 165, 122, 69, 228, 203, 150, 56, 85, 122, 119, 107, 104, 183, 159, 147, 154, 147, 96] },
  { size: [13, 9], filter: 'hamming', expected: [0, 0, 39, 5, 1, 44, 36, 5, 77, 46, 9, 88, 74, 20, 117, 89, 30, 133, 111, 45, 156, 133, 66, 179, 148, 80, 195, 176, 114, 224, 186, 126, 229, 217, 173, 46, 222, 180, 17, 2, 4, 41, 7, 5, 47, 38, 9, 81, 48, 13, 93, 76, 24, 124, 91, 34, 140, 113, 49, 165, 135, 70, 164, 150, 84, 163, 178, 118, 194, 188, 130, 200, 219, 177, 55, 224, 184, 32, 11, 23, 52, 16, 24, 59, 47, 28, 103, 57, 32, 117, 85, 43, 155, 100, 53, 176, 122, 68, 207, 144, 89, 89, 159, 103, 7, 187, 137, 45, 197, 149, 59, 228, 196, 100, 233, 203, 107, 15, 32, 57, 20, 33, 65, 51, 37, 112, 61, 41, 128, 89, 52, 170, 104, 62, 155, 126, 77, 132, 148, 98, 71, 163, 112, 29, 191, 146, 71, 201, 158, 86, 232, 205, 134, 237, 212, 142, 22, 46, 65, 27, 47, 74, 58, 51, 128, 68, 55, 146, 96, 66, 194, 111, 76, 117, 133, 91, 4, 155, 112, 42, 170, 126, 70, 198, 160, 118, 208, 172, 136, 239, 219, 190, 244, 226, 199, 29, 60, 73, 34, 61, 83, 65, 65, 144, 75, 69, 165, 103, 80, 218, 118, 90, 145, 140, 105, 37, 162, 126, 80, 177, 140, 111, 205, 174, 164, 215, 186, 181, 246, 233, 107, 251, 240, 95, 33, 69, 78, 38, 70, 88, 69, 74, 154, 79, 78, 176, 107, 89, 230, 122, 99, 160, 144, 114, 57, 166, 135, 103, 181, 149, 136, 209, 183, 190, 219, 195, 206, 247, 239, 59, 252, 246, 35, 42, 88, 89, 47, 89, 100, 78, 93, 176, 88, 97, 147, 116, 108, 54, 131, 118, 72, 153, 133, 99, 175, 154, 152, 190, 168, 187, 218, 202, 95, 223, 209, 65, 74, 76, 104, 51, 55, 110, 44, 92, 91, 49, 93, 103, 80, 97, 180, 90, 101, 141, 118, 112, 18, 133, 122, 54, 155, 137, 108, 177, 158, 162, 192, 172, 198, 220, 206, 75, 224, 212, 36, 39, 43, 113, 10, 16, 125] },
  { size: [3, 2], filter: 'lanczos', expected: [33, 21, 95, 119, 63, 135, 213, 167, 109, 58, 74, 129, 152, 124, 113, 197, 181, 117] },
  { size: [12, 7], filter: 'lanczos', expected: [0, 0, 35, 8, 0, 48, 34, 4, 75, 58, 11, 102, 77, 21, 117, 100, 36, 135, 120, 53, 161, 143, 75, 200, 162, 95, 255, 186, 127, 242, 212, 165, 88, 224, 184, 0, 3, 10, 41, 14, 11, 57, 40, 15, 87, 64, 22, 109, 83, 32, 147, 106, 47, 206, 126, 64, 178, 149, 86, 97, 168, 106, 106, 192, 138, 132, 218, 176, 82, 230, 195, 45, 11, 31, 52, 24, 32, 70, 50, 36, 109, 74, 43, 146, 93, 53, 174, 116, 68, 185, 136, 85, 114, 159, 107, 3, 178, 127, 0, 202, 159, 50, 226, 195, 128, 237, 213, 167, 19, 46, 60, 31, 47, 77, 57, 51, 125, 81, 58, 199, 100, 68, 179, 123, 83, 51, 143, 100, 0, 166, 122, 55, 185, 142, 102, 209, 174, 137, 235, 212, 183, 247, 231, 204, 26, 61, 69, 38, 62, 85, 64, 66, 140, 88, 73, 249, 107, 83, 239, 130, 98, 81, 151, 116, 7, 174, 138, 89, 187, 152, 200, 218, 190, 221, 255, 253, 125, 255, 255, 47, 36, 82, 74, 48, 83, 114, 74, 87, 167, 98, 94, 169, 117, 104, 125, 140, 119, 90, 159, 134, 108, 181, 155, 162, 217, 193, 175, 222, 205, 131, 170, 165, 77, 136, 137, 49, 42, 93, 75, 54, 94, 137, 80, 98, 185, 104, 105, 81, 123, 115, 0, 146, 130, 52, 163, 144, 167, 183, 163, 212, 243, 225, 114, 222, 212, 17, 67, 69, 83, 0, 0, 156] },
];

describe('resizeRgb against Pillow', () => {
  for (const { size, filter, expected } of PIL_CASES) {
    it(`7x5 -> ${size[0]}x${size[1]} ${filter}`, () => {
      const out = resizeRgb(synthetic(), size[0], size[1], filter);
      assert.equal(out.width, size[0]);
      assert.equal(out.height, size[1]);
      assert.deepEqual(Array.from(out.data), expected);
    });
  }

  it('pads to a square canvas like Image.new + paste, then resizes', () => {
    const out = resizeRgb(synthetic(), 4, 4, 'bicubic', {
      canvas: { width: 7, height: 7, left: 0, top: 1, fill: [127, 127, 127] },
    });
    assert.deepEqual(
      Array.from(out.data),
      [76, 69, 93, 104, 79, 125, 135, 103, 162, 162, 139, 119, 22, 20, 74, 87, 42, 151, 157, 99, 87, 225, 185, 113, 45, 68, 118, 109, 89, 140, 182, 149, 106, 215, 201, 129, 97, 113, 129, 125, 122, 103, 160, 152, 137, 118, 118, 106],
    );
  });
});

describe('resizeRgb properties', () => {
  it('returns a copy when the size does not change', () => {
    const src = noise(9, 4);
    for (const filter of ['bicubic', 'bilinear', 'nearest'] as const) {
      const out = resizeRgb(src, 9, 4, filter);
      assert.deepEqual(out.data, src.data);
      assert.notEqual(out.data, src.data);
    }
  });

  it('an unchanged axis is the identity: full fixed-point weight on one pixel', () => {
    for (const filter of ['bicubic', 'bilinear'] as const) {
      const c = computeAxisCoefficients(13, 13, filter);
      for (let i = 0; i < 13; i++) {
        const window = Array.from(c.weights.subarray(i * c.kernelSize, i * c.kernelSize + c.count[i]));
        assert.deepEqual(
          window.map((w, k) => [c.start[i] + k, w]).filter(([, w]) => w !== 0),
          [[i, 1 << PRECISION_BITS]],
        );
      }
    }
  });

  it('a virtual canvas gives the bytes of a materialised padded image', () => {
    const src = noise(23, 9, 7);
    const fill = [10, 200, 77] as const;
    const canvas = { width: 23, height: 23, left: 0, top: 7, fill };
    const padded = materialise(src, canvas);
    for (const filter of ['bicubic', 'bilinear', 'nearest'] as const) {
      for (const [w, h] of [[8, 8], [30, 30], [23, 5], [1, 1]]) {
        const a = resizeRgb(src, w, h, filter, { canvas });
        const b = resizeRgb(padded, w, h, filter);
        assert.deepEqual(a.data, b.data, `${filter} ${w}x${h}`);
      }
    }
    const tall = noise(5, 17, 3);
    const side = { width: 17, height: 17, left: 6, top: 0, fill };
    assert.deepEqual(resizeRgb(tall, 6, 6, 'bicubic', { canvas: side }).data, resizeRgb(materialise(tall, side), 6, 6, 'bicubic').data);
  });

  it('a region is the same crop of the full output, zero outside it', () => {
    const src = noise(31, 19, 5);
    for (const filter of ['bicubic', 'bilinear', 'nearest'] as const) {
      const full = resizeRgb(src, 20, 12, filter);
      const region = { left: -2, top: 3, width: 10, height: 12 };
      const part = resizeRgb(src, 20, 12, filter, { region });
      for (let y = 0; y < region.height; y++) {
        for (let x = 0; x < region.width; x++) {
          const fx = x + region.left;
          const fy = y + region.top;
          const inside = fx >= 0 && fx < 20 && fy >= 0 && fy < 12;
          for (let c = 0; c < 3; c++) {
            const want = inside ? full.data[(fy * 20 + fx) * 3 + c] : 0;
            assert.equal(part.data[(y * region.width + x) * 3 + c], want, `${filter} (${x},${y})`);
          }
        }
      }
    }
  });

  it('refuses bad sizes and a canvas the image does not fit', () => {
    const src = noise(4, 4);
    assert.throws(() => resizeRgb(src, 0, 4, 'bicubic'), RangeError);
    assert.throws(() => resizeRgb(src, 2.5, 4, 'bicubic'), RangeError);
    assert.throws(() => resizeRgb({ width: 4, height: 4, data: new Uint8Array(10) }, 2, 2, 'bicubic'), RangeError);
    assert.throws(
      () => resizeRgb(src, 2, 2, 'bicubic', { canvas: { width: 5, height: 5, left: 2, top: 0, fill: [0, 0, 0] } }),
      /does not fit/,
    );
  });
});

function materialise(src: RgbImage, canvas: { width: number; height: number; left: number; top: number; fill: readonly number[] }): RgbImage {
  const data = new Uint8Array(canvas.width * canvas.height * 3);
  for (let i = 0; i < canvas.width * canvas.height; i++) data.set(canvas.fill, i * 3);
  for (let y = 0; y < src.height; y++) {
    const row = src.data.subarray(y * src.width * 3, (y + 1) * src.width * 3);
    data.set(row, ((y + canvas.top) * canvas.width + canvas.left) * 3);
  }
  return { width: canvas.width, height: canvas.height, data };
}
