// The manifest of a model package (docs/model-package.md), as TypeScript types. The JSON Schema
// in manifest.schema.json is the source of truth (the Python exporter validates against it
// too); these types mirror it field for field, in the same snake_case.

export type TextFamily = 'llama' | 'phi' | 'stablelm' | 'qwen2' | 'gemma';
export type VisionFamily = 'siglip' | 'clip';
export type FeatureSelect = 'patch' | 'cls_patch';
export type ResizeMode = 'squash' | 'shortest_edge_center_crop' | 'squash_center_crop';
export type ResampleName = 'bicubic' | 'bilinear' | 'nearest' | 'box' | 'hamming' | 'lanczos';
export type ImageTokenMode = 'splice' | 'token';
export type Dtype = 'fp32' | 'fp16';

export interface ManifestSource {
  kind: 'random-init' | 'tinyllava-factory' | 'tinyllava-bench' | 'llava-hf';
  checkpoint: string | null;
  [key: string]: unknown; // provenance: informative, open-ended
}

export interface Quantization {
  method: 'int4';
  format: 'MatMulNBits';
  block_size: number;
  symmetric: boolean;
}

export interface ManifestFiles {
  vision_encoder: string;
  connector: string;
  embed_tokens: string;
  decoder: string;
  tokenizer: string;
  /** What the reference tokenizer does on test inputs; verified when the package loads. */
  tokenizer_check?: string;
}

export interface TextConfig {
  family: TextFamily;
  num_layers: number;
  hidden_size: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  /** Rows of the logits; may exceed the tokenizer's vocabulary. */
  vocab_size: number;
  bos_token_id: number | null;
  eos_token_ids: number[];
  pad_token_id: number | null;
}

export interface VisionConfig {
  family: VisionFamily;
  image_size: number;
  patch_size: number;
  hidden_size: number;
  feature_layer: number;
  feature_select: FeatureSelect;
  /** Image embeddings per image after feature selection (728 for Factory SigLIP). */
  num_image_tokens: number;
}

export interface ConnectorConfig {
  /** linear | identity | mlpNx_gelu (N >= 1); the connector graph computes it. */
  type: string;
  input_size: number;
  output_size: number;
}

export interface ImagePreprocessing {
  /** Legacy `image_aspect_ratio: "pad"`: paste the image centred on a pad_color square first. */
  pad_to_square: boolean;
  pad_color: [number, number, number] | null;
  resize_mode: ResizeMode;
  /** Output size of the whole pipeline (the vision encoder's input). */
  size: { height: number; width: number };
  /** shortest_edge_center_crop: the short side's length after the resize. */
  shortest_edge: number | null;
  /** squash_center_crop: the squash's size before the centre crop to `size`. */
  resize_size?: { height: number; width: number } | null;
  resample: ResampleName;
  rescale_factor: number;
  image_mean: [number, number, number];
  image_std: [number, number, number];
}

export interface PromptConfig {
  template: string;
  system_message: string;
  system_format: string;
  user_format: string;
  assistant_format: string;
  generation_prompt: string;
  image_format: string;
  image_placeholder: string;
  eos_text: string;
  image_token_mode: ImageTokenMode;
  image_token_id: number | null;
  stop_token_ids: number[];
}

/** How the server must run tokenizer.json to tokenize and detokenize as the reference does. */
export interface TokenizerSettings {
  /** Informative: the tokenizer class the original code runs. */
  reference: string;
  /** Prepend one space to each non-empty text before encoding; drop a lone "▁" before a leading special token. */
  prefix_space: boolean;
  /** tokenizer_json: tokenizer.json's own decoder; slow: the settings below, as a slow transformers tokenizer. */
  decode: 'tokenizer_json' | 'slow';
  /** Invalid byte-fallback runs: hf = one U+FFFD per byte of the run; sentencepiece = per invalid byte, valid characters kept. */
  byte_fallback: 'hf' | 'sentencepiece';
  /** Leading space of the text (decode-stream.ts RunLeadingSpace). */
  run_leading_space: 'tokenizer_json' | 'strip' | 'strip_sentencepiece' | 'keep';
  /** Non-special added tokens: each splits the text into runs decoded separately. */
  added_token_ids: number[];
  /** Joins runs and added tokens (slow tokenizers: " "; Gemma, Qwen2: ""). */
  added_token_separator: string;
  /** Added tokens' "▁" become spaces (GemmaTokenizer). */
  added_token_metaspace: boolean;
  clean_up_tokenization_spaces: boolean;
  /** The answer is the decoded text with Python's str.strip() applied. */
  strip_answer: boolean;
}

export interface Manifest {
  format: 'tinyllava-onnx';
  format_version: 1;
  name: string;
  source: ManifestSource;
  dtype: Dtype;
  quantization: Quantization | null;
  max_context: number;
  files: ManifestFiles;
  text: TextConfig;
  vision: VisionConfig;
  connector: ConnectorConfig;
  image_preprocessing: ImagePreprocessing;
  prompt: PromptConfig;
  tokenizer?: TokenizerSettings;
}
