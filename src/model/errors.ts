// The model layer's error catalogue. Each class carries a stable `code` the layers above map to
// an HTTP status or a log line; messages name the file or field, the problem and the value.

/** A model package that cannot be served: the message starts with the file at fault. */
export class PackageError extends Error {
  override readonly name = 'PackageError';
  constructor(
    /** The package-relative file at fault, e.g. "manifest.json". */
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

export type ImageErrorCode = 'unsupported_format' | 'too_many_pixels' | 'corrupt';

/** An input image the server refuses (a client error). */
export class ImageError extends Error {
  override readonly name = 'ImageError';
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export type PromptErrorCode =
  | 'invalid_messages'
  | 'image_count_mismatch'
  | 'too_long'; // surely longer than the context, found before tokenizing

/** Messages that cannot be rendered into this model's prompt (a client error). */
export class PromptError extends Error {
  override readonly name = 'PromptError';
  constructor(
    readonly code: PromptErrorCode,
    message: string,
  ) {
    super(message);
  }
}
