// Encoded image bytes -> packed 8-bit RGB, decoded the way the reference's
// `PIL.Image.open(f).convert('RGB')` decodes them (byte-exact for every case measured):
// - ICC profiles are ignored (PIL does not apply them; sharp does by default).
// - Alpha is dropped, not composited (PIL's convert('RGB')); greyscale is replicated and palette
//   images expanded. EXIF orientation is not applied (PIL's open() does not either).
// - CMYK JPEGs: libvips would convert through an ICC profile; PIL uses the naive formula
//   R = 255 - C - K (with its 8-bit rounding), so the raw CMYK is fetched and converted here.
// - GIF: the first frame only; transparent pixels get their palette colour, as in PIL.
// Known difference: 16-bit greyscale PNGs. PIL 9.4 opens them as 32-bit integers and clips
// them to 0..255 (mostly white); sharp scales them to 8 bits, which is what the picture shows.
//
// The size limits are enforced from the header, before any pixel is decoded.

import sharp, { type Metadata, type OutputInfo, type Sharp } from 'sharp';
import { ImageError } from '../errors.js';
import { gifTransparentColour } from './gif-transparency.js';
import type { RgbImage } from './rgb-image.js';

export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif';
export const DEFAULT_IMAGE_FORMATS: readonly ImageFormat[] = ['jpeg', 'png', 'webp', 'gif'];

/** Default longest side: keeps the resampler's buffers bounded whatever the aspect ratio. */
export const DEFAULT_MAX_SIDE = 16384;

export interface DecodeOptions {
  /** Largest width x height accepted (of the first frame); larger images are refused unread. */
  maxPixels: number;
  /**
   * Longest side accepted (default DEFAULT_MAX_SIDE). Squashing a 1 x 10^7 image to 384x384
   * would need a 384 x 10^7 intermediate row buffer: extreme aspect ratios are refused too.
   */
  maxSide?: number;
  /** Formats accepted; default DEFAULT_IMAGE_FORMATS. (BMP: sharp has no decoder for it.) */
  formats?: readonly ImageFormat[];
}

export async function decodeImage(input: Uint8Array, options: DecodeOptions): Promise<RgbImage> {
  if (input.length === 0) throw new ImageError('corrupt', 'image is empty (0 bytes)');
  const formats = options.formats ?? DEFAULT_IMAGE_FORMATS;

  let meta: Metadata;
  try {
    meta = await sharp(input, { limitInputPixels: false }).metadata();
  } catch (err) {
    const message = errorMessage(err);
    if (/unsupported image format/i.test(message)) {
      throw new ImageError('unsupported_format', `image format not recognised; accepted: ${formats.join(', ')}`);
    }
    throw new ImageError('corrupt', `image header cannot be read: ${message}`);
  }
  const format = meta.format as string;
  if (!(formats as readonly string[]).includes(format)) {
    throw new ImageError('unsupported_format', `image format ${format} is not accepted; accepted: ${formats.join(', ')}`);
  }
  const width = meta.width ?? 0;
  const height = meta.pageHeight ?? meta.height ?? 0;
  if (width < 1 || height < 1) throw new ImageError('corrupt', `image has no size (${width}x${height})`);
  if (width * height > options.maxPixels) {
    throw new ImageError(
      'too_many_pixels',
      `image is ${width}x${height} = ${width * height} pixels, more than the limit of ${options.maxPixels}`,
    );
  }
  const maxSide = options.maxSide ?? DEFAULT_MAX_SIDE;
  if (width > maxSide || height > maxSide) {
    throw new ImageError('too_many_pixels', `image is ${width}x${height}, a side longer than the limit of ${maxSide}`);
  }

  try {
    if (meta.space === 'cmyk') return await decodeCmyk(input, options.maxPixels);
    const gifColour = format === 'gif' && meta.hasAlpha ? gifTransparentColour(input) : null;
    if (gifColour) return await decodeGifWithTransparency(input, options.maxPixels, gifColour);
    const { data, info } = await open(input, options.maxPixels)
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    return rgbFrom(data, info, 3);
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError('corrupt', `image cannot be decoded: ${errorMessage(err)}`);
  }
}

// failOn 'error': libjpeg warnings (e.g. stray bytes) do not stop PIL, so they don't stop us;
// truncated files still fail, as in PIL.
function open(input: Uint8Array, maxPixels: number): Sharp {
  return sharp(input, { ignoreIcc: true, limitInputPixels: maxPixels, failOn: 'error', pages: 1 });
}

/** PIL's CMYK -> RGB: each channel nk - round(ink * nk / 255) with nk = 255 - K. */
async function decodeCmyk(input: Uint8Array, maxPixels: number): Promise<RgbImage> {
  // Keeping the pipeline in CMYK hands out the stored (Adobe-inversion-corrected) values
  // instead of a colour-managed conversion.
  const { data, info } = await open(input, maxPixels)
    .pipelineColourspace('cmyk')
    .toColourspace('cmyk')
    .raw()
    .toBuffer({ resolveWithObject: true });
  const cmyk = rgbFrom(data, info, 4);
  const out = new Uint8Array(info.width * info.height * 3);
  for (let i = 0, o = 0; i < cmyk.data.length; i += 4, o += 3) {
    const nk = 255 - cmyk.data[i + 3];
    for (let c = 0; c < 3; c++) {
      // (x * nk + 128) * 257 >> 16 written as PIL's two-shift form: x * nk / 255, rounded.
      const t = cmyk.data[i + c] * nk + 128;
      const v = nk - (((t >> 8) + t) >> 8);
      out[o + c] = v < 0 ? 0 : v;
    }
  }
  return { width: info.width, height: info.height, data: out };
}

async function decodeGifWithTransparency(
  input: Uint8Array,
  maxPixels: number,
  colour: [number, number, number],
): Promise<RgbImage> {
  const { data, info } = await open(input, maxPixels)
    .toColourspace('srgb')
    .ensureAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  const rgba = rgbFrom(data, info, 4);
  const out = new Uint8Array(info.width * info.height * 3);
  for (let i = 0, o = 0; i < rgba.data.length; i += 4, o += 3) {
    const transparent = rgba.data[i + 3] === 0;
    out[o] = transparent ? colour[0] : rgba.data[i];
    out[o + 1] = transparent ? colour[1] : rgba.data[i + 1];
    out[o + 2] = transparent ? colour[2] : rgba.data[i + 2];
  }
  return { width: info.width, height: info.height, data: out };
}

function rgbFrom(data: Buffer, info: OutputInfo, channels: number): RgbImage {
  if (info.channels !== channels || data.length !== info.width * info.height * channels) {
    throw new ImageError('corrupt', `decoder returned ${info.channels} channels, expected ${channels}`);
  }
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0] : String(err);
}
