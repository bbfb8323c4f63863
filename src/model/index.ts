// The model layer's public surface: package loading, tokenizer, prompt building and image
// preprocessing. Layers above import from here.

export { ImageError, PackageError, PromptError } from './errors.js';
export type { ImageErrorCode, PromptErrorCode } from './errors.js';
export * from './manifest.js';
export { CONNECTOR_IO, EMBED_TOKENS_IO, VISION_ENCODER_IO } from './graph-io.js';
export { TextTokenizer, DecodeStream, type DecodeStreamOptions } from './tokenizer.js';
export { AnswerTextStream, DEFAULT_TOKENIZER_SETTINGS } from './answer-text.js';
export { loadPackageTokenizer, tokenizerCheckProblem, type TokenizerCheck } from './tokenizer-check.js';
export { renderPrompt, type PromptMessage, type PromptPart, type RenderedPrompt, type RenderOptions } from './template.js';
export {
  buildPrompt,
  tokenizePrompt,
  IMAGE_TOKEN_INDEX,
  type BuiltPrompt,
  type PromptEncoder,
  type PromptOptions,
  type PromptSegment,
  type TokenizedPrompt,
} from './prompt.js';
export { decodeImage, DEFAULT_IMAGE_FORMATS, DEFAULT_MAX_SIDE, type DecodeOptions, type ImageFormat } from './image/decode.js';
export {
  preprocessImage,
  resizeForModel,
  normalizeToChw,
  type PixelValues,
  type PreprocessedImage,
} from './image/preprocess.js';
export { resizeRgb, type OutputRegion, type PaddedCanvas, type ResampleFilter, type ResizeOptions } from './image/resample.js';
export type { RgbImage } from './image/rgb-image.js';
