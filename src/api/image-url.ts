// An image part's URL -> where the engine's encoded image bytes come from. Accepted:
//   data:image/<type>;base64,<data>   inline (standard or URL-safe alphabet, padding optional,
//                                     line breaks ignored)
//   upload://<field>                  a file part of the same multipart/form-data request
//   http(s)://...                     fetched later by remote-image.ts, when the operator allows
//                                     it; refused here when the policy never would
// Whether the bytes are a decodable image is the model layer's call (it reads the header before
// decoding); here only the wrapping is checked.

import { ApiError } from './errors.js';
import type { RemoteImages } from './remote-image.js';

/** Uploaded files by field name, for upload:// URLs; absent for JSON requests. */
export type Uploads = ReadonlyMap<string, Uint8Array>;

export type ImageSource = { kind: 'bytes'; data: Uint8Array; upload: string | null } | { kind: 'remote'; url: string };

export function imageFromUrl(url: string, param: string, uploads: Uploads | undefined, remote: RemoteImages | null = null): ImageSource {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  switch (scheme) {
    case 'data':
      return { kind: 'bytes', data: fromDataUrl(url, param), upload: null };
    case 'upload':
      return { kind: 'bytes', ...fromUpload(url, param, uploads) };
    case 'http':
    case 'https':
      if (!remote?.enabled) {
        throw new ApiError(
          'image_url_not_allowed',
          'this server does not fetch images from http(s) URLs; send the image inline as a data URL ' +
            '(data:image/jpeg;base64,...) or upload it with multipart/form-data',
          { param },
        );
      }
      remote.check(url, param);
      return { kind: 'remote', url };
    default:
      throw new ApiError('invalid_image_url', 'image URLs must be data:, upload://<field> or http(s) URLs', {
        param,
        quote: `; got ${JSON.stringify(url.slice(0, 40))}`,
      });
  }
}

function fromDataUrl(url: string, param: string): Uint8Array {
  // data:[<media type>][;<parameter>]*,<payload>; the payload is never run through a regex
  // with backtracking, it can be tens of megabytes.
  const comma = url.indexOf(',');
  if (comma < 0) throw new ApiError('invalid_image_url', 'the data URL has no "," before its data', { param });
  const [mediaType, ...params] = url.slice('data:'.length, comma).split(';').map((s) => s.trim().toLowerCase());
  if (!mediaType.startsWith('image/')) {
    throw new ApiError('invalid_image_url', `the data URL's media type must be image/*; got ${JSON.stringify(mediaType || 'none')}`, { param });
  }
  if (mediaType === 'image/svg+xml') {
    throw new ApiError('invalid_image', 'SVG images are not supported; send a JPEG, PNG, WebP or GIF', { param });
  }
  if (!params.includes('base64')) {
    throw new ApiError('invalid_image_url', 'the data URL must be base64-encoded (data:image/...;base64,...)', { param });
  }
  return decodeBase64(url.slice(comma + 1), param);
}

function decodeBase64(payload: string, param: string): Uint8Array {
  // Buffer.from(_, 'base64') skips characters it does not know; refuse them instead, so that a
  // mangled payload is reported as such rather than decoded into a corrupt image.
  const text = /\s/.test(payload) ? payload.replace(/\s+/g, '') : payload;
  const bad = text.search(/[^A-Za-z0-9+/_-]/);
  const padding = /=*$/.exec(text)![0].length;
  const body = text.length - padding;
  if ((bad >= 0 && bad < body) || padding > 2 || body % 4 === 1 || (padding > 0 && text.length % 4 !== 0)) {
    const where = bad >= 0 && bad < body ? `: unexpected ${JSON.stringify(text[bad])} at offset ${bad}` : ': wrong length or padding';
    throw new ApiError('invalid_image_url', `the data URL's data is not valid base64${where}`, { param });
  }
  if (body === 0) throw new ApiError('invalid_image', 'the image is empty (0 bytes)', { param });
  const bytes = Buffer.from(text, 'base64');
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function fromUpload(url: string, param: string, uploads: Uploads | undefined): { data: Uint8Array; upload: string } {
  if (!uploads) {
    throw new ApiError('invalid_image_url', 'upload:// URLs refer to files of a multipart/form-data request; this request has none', {
      param,
    });
  }
  const field = url.slice('upload://'.length);
  const data = uploads.get(field);
  if (!data) {
    const known = [...uploads.keys()].map((k) => JSON.stringify(k)).join(', ') || 'none';
    throw new ApiError('invalid_image_url', `no uploaded file named ${JSON.stringify(field)}; uploaded: ${known}`, { param });
  }
  return { data, upload: field };
}
