// Decoding like PIL's Image.open(f).convert('RGB'). Inputs made with sharp at test time have
// expected values that follow from their construction; the CMYK JPEG and the transparent GIF
// were written by Pillow 9.4 and their expected RGB is what Pillow's convert('RGB') returned:
//
//   a = np.array([[[(x*60+y*20)%256, (x*10+y*80)%256, (x*y*40+30)%256] for x in range(4)]
//                 for y in range(3)], dtype=np.uint8); im = Image.fromarray(a, 'RGB')
//   im.convert('CMYK').save(b, 'JPEG', quality=95)
//   im.quantize(8).save(b, 'GIF', transparency=2)
//   list(np.asarray(Image.open(b).convert('RGB')).ravel())

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { decodeImage, type DecodeOptions } from '../../src/model/image/decode.js';
import { gifTransparentColour } from '../../src/model/image/gif-transparency.js';
import { ImageError } from '../../src/model/errors.js';

const LIMIT = { maxPixels: 1_000_000 };

const CMYK_JPEG = Buffer.from(
  '/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwACAQEBAQECAQEBAgICAgIEAwICAgIFBAQDBAYFBgYGBQYGBgcJCAYHCQcGBggLCAkKCgoKCgYICwwLCgwJCgoK/8AAFAgAAwAEBEMRAE0RAFkRAEsRAP/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgMEBQYHCAkKC//EALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJChYXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqio6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+v/aAA4EQwBNAFkASwAAPwD6e/4Ik/DDwB/w7z8H/wDFK2v8X8J/55x+9exfDb/gmH+wH/wiVv8A8Ys+F/8AvxJ6D/br84P2qfG95+z54Y+DumfCzwp4StU8SfB+y1vW5NS8D6XqU11fyajqMLzGW8tpXGY7eJdqsFG3IAJYn9/K/9k=',
  'base64',
);
const CMYK_RGB = [0, 0, 31, 60, 11, 30, 120, 20, 29, 180, 31, 30, 20, 79, 31, 80, 90, 68, 140, 99, 113, 200, 110, 149, 40, 160, 30, 101, 171, 109, 161, 180, 190, 220, 191, 12];

// Pillow writes a full 256-entry colour table; only the first 8 entries are used.
const TRANSPARENT_GIF = Buffer.concat([
  Buffer.from('47494638396104000300870000', 'hex'),
  Buffer.from('beb96664aa6e28a01eaa6982505a4696191e3c0a1e0a281e', 'hex'),
  Buffer.alloc(768 - 24),
  Buffer.from('21f90401000002002c0000000004000300000810000f182850e000810103040400002020003b', 'hex'),
]);
const TRANSPARENT_GIF_RGB = [10, 40, 30, 60, 10, 30, 150, 25, 30, 150, 25, 30, 10, 40, 30, 80, 90, 70, 170, 105, 130, 170, 105, 130, 40, 160, 30, 100, 170, 110, 190, 185, 102, 190, 185, 102];

function pattern(w: number, h: number, channels: number): Buffer {
  const data = Buffer.alloc(w * h * channels);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 3)) % 256;
  return data;
}

async function expectImageError(input: Uint8Array, code: string, message: RegExp, options: DecodeOptions = LIMIT): Promise<void> {
  await assert.rejects(decodeImage(input, options), (err: unknown) => {
    assert.ok(err instanceof ImageError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe('decodeImage', () => {
  it('decodes RGB PNG exactly', async () => {
    const rgb = pattern(5, 3, 3);
    const png = await sharp(rgb, { raw: { width: 5, height: 3, channels: 3 } }).png().toBuffer();
    const out = await decodeImage(png, LIMIT);
    assert.deepEqual([out.width, out.height], [5, 3]);
    assert.deepEqual(Buffer.from(out.data), rgb);
  });

  it('drops alpha without compositing (PIL convert("RGB"))', async () => {
    const rgba = pattern(4, 4, 4);
    const png = await sharp(rgba, { raw: { width: 4, height: 4, channels: 4 } }).png().toBuffer();
    const out = await decodeImage(png, LIMIT);
    const expected = Buffer.alloc(4 * 4 * 3);
    for (let p = 0; p < 16; p++) rgba.copy(expected, p * 3, p * 4, p * 4 + 3);
    assert.deepEqual(Buffer.from(out.data), expected);
  });

  it('replicates greyscale into three channels', async () => {
    const grey = pattern(3, 2, 1);
    const png = await sharp(grey, { raw: { width: 3, height: 2, channels: 1 } }).png().toBuffer();
    const out = await decodeImage(png, LIMIT);
    assert.deepEqual(Array.from(out.data), Array.from(grey).flatMap((v) => [v, v, v]));
  });

  it('converts CMYK JPEGs with PIL\'s formula, not a colour profile', async () => {
    const out = await decodeImage(CMYK_JPEG, LIMIT);
    assert.deepEqual(Array.from(out.data), CMYK_RGB);
  });

  it('gives transparent GIF pixels their palette colour, as PIL does', async () => {
    assert.deepEqual(gifTransparentColour(TRANSPARENT_GIF), [0x28, 0xa0, 0x1e]);
    const out = await decodeImage(TRANSPARENT_GIF, LIMIT);
    assert.deepEqual(Array.from(out.data), TRANSPARENT_GIF_RGB);
  });

  it('refuses images over the pixel limit before decoding them', async () => {
    const png = await sharp(pattern(100, 50, 3), { raw: { width: 100, height: 50, channels: 3 } }).png().toBuffer();
    await expectImageError(png, 'too_many_pixels', /100x50 = 5000 pixels, more than the limit of 4999/, { maxPixels: 4999 });
    assert.equal((await decodeImage(png, { maxPixels: 5000 })).width, 100);
    await expectImageError(png, 'too_many_pixels', /100x50, a side longer than the limit of 99/, { maxPixels: 5000, maxSide: 99 });
  });

  it('refuses SVG, TIFF and BMP, and names what it accepts', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>');
    await expectImageError(svg, 'unsupported_format', /format svg is not accepted; accepted: jpeg, png, webp, gif/);
    const tiff = await sharp(pattern(2, 2, 3), { raw: { width: 2, height: 2, channels: 3 } }).tiff().toBuffer();
    await expectImageError(tiff, 'unsupported_format', /format tiff is not accepted/);
    const bmp = Buffer.concat([Buffer.from('424d', 'hex'), Buffer.alloc(60)]);
    await expectImageError(bmp, 'unsupported_format', /not recognised/);
    const png = await sharp(pattern(2, 2, 3), { raw: { width: 2, height: 2, channels: 3 } }).png().toBuffer();
    await expectImageError(png, 'unsupported_format', /format png is not accepted; accepted: jpeg$/, { ...LIMIT, formats: ['jpeg'] });
  });

  it('reports empty, truncated and garbage input', async () => {
    await expectImageError(new Uint8Array(0), 'corrupt', /empty/);
    await expectImageError(Buffer.from('not an image at all'), 'unsupported_format', /not recognised/);
    const jpeg = await sharp(pattern(64, 64, 3), { raw: { width: 64, height: 64, channels: 3 } }).jpeg().toBuffer();
    await expectImageError(jpeg.subarray(0, jpeg.length >> 1), 'corrupt', /cannot be decoded/);
  });
});
