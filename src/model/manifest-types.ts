// The manifest of a model package (docs/model-package.md), as TypeScript types. The JSON Schema
// in manifest.schema.json is the source of truth (the Python exporter validates against it
// too); these types mirror it field for field, in the same snake_case.

export type TextFamily = 'llama' | 'phi' | 'stablelm' | 'qwen2' | 'gemma';
export type VisionFamily = 'siglip' | 'clip';
export type FeatureSelect = 'patch' | 'cls_patch';
export type ResizeMode = 'squash' | 'shortest_edge_center_crop';
export type ResampleName = 'bicubic' | 'bilinear' | 'nearest';
export type ImageTokenMode = 'splice' | 'token';
export type Dtype = 'fp32' | 'fp16';

export interface ManifestSource {
  kind: 'random-init' | 'tinyllava-factory' | 'llava-hf';
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
  type: 'mlp2x_gelu';
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
}
