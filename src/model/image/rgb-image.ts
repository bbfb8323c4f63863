// The one in-memory image shape of the model layer: packed 8-bit RGB, row-major (HWC), no
// padding between rows. Plain typed arrays only, so an image can be posted to a worker thread
// (transfer `data.buffer`) and the resampler can run there.

export interface RgbImage {
  width: number;
  height: number;
  /** width * height * 3 bytes: R, G, B of pixel (x, y) at (y * width + x) * 3. */
  data: Uint8Array;
}

export function createRgbImage(width: number, height: number): RgbImage {
  return { width, height, data: new Uint8Array(width * height * 3) };
}

/** Throws unless `data` holds exactly width x height RGB pixels. */
export function assertRgbImage(image: RgbImage): void {
  const { width, height, data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`image size must be positive integers, got ${width}x${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new RangeError(`RGB image ${width}x${height} needs ${width * height * 3} bytes, got ${data.length}`);
  }
}
