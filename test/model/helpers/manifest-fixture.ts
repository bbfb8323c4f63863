// A valid manifest (the example of docs/model-package.md) and a way to lay out a package
// directory around it, for tests that do not need real graphs.

import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Manifest } from '../../../src/model/manifest-types.js';

export function exampleManifest(): Manifest {
  return {
    format: 'tinyllava-onnx',
    format_version: 1,
    name: 'tiny-random-qwen2-siglip',
    source: {
      kind: 'random-init',
      checkpoint: null,
      preset: 'tiny-qwen2-siglip',
      seed: 0,
      exporter_version: '0.1.0',
      transformers_version: '4.46.3',
      torch_version: '1.13.0',
    },
    dtype: 'fp32',
    quantization: null,
    max_context: 2048,
    files: {
      vision_encoder: 'onnx/vision_encoder.onnx',
      connector: 'onnx/connector.onnx',
      embed_tokens: 'onnx/embed_tokens.onnx',
      decoder: 'onnx/decoder_model_merged.onnx',
      tokenizer: 'tokenizer.json',
    },
    text: {
      family: 'qwen2',
      num_layers: 2,
      hidden_size: 64,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      vocab_size: 1024,
      bos_token_id: null,
      eos_token_ids: [0],
      pad_token_id: 0,
    },
    vision: {
      family: 'siglip',
      image_size: 384,
      patch_size: 14,
      hidden_size: 32,
      feature_layer: -2,
      feature_select: 'patch',
      num_image_tokens: 728,
    },
    connector: { type: 'mlp2x_gelu', input_size: 32, output_size: 64 },
    image_preprocessing: {
      pad_to_square: false,
      pad_color: null,
      resize_mode: 'squash',
      size: { height: 384, width: 384 },
      shortest_edge: null,
      resample: 'bicubic',
      rescale_factor: 0.00392156862745098,
      image_mean: [0.5, 0.5, 0.5],
      image_std: [0.5, 0.5, 0.5],
    },
    prompt: {
      template: 'qwen2_base',
      system_message:
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
      system_format: '{system} ',
      user_format: 'USER: {content} ',
      assistant_format: 'ASSISTANT: {content}{eos}',
      generation_prompt: 'ASSISTANT:',
      image_format: '<image>\n{content}',
      image_placeholder: '<image>',
      eos_text: '<|endoftext|>',
      image_token_mode: 'splice',
      image_token_id: null,
      stop_token_ids: [0],
    },
  };
}

/** Writes `manifest` (any JSON) into a fresh directory, with a one-byte file for each of `files`. */
export function writePackage(manifest: unknown, files: readonly string[] = Object.values(exampleManifest().files)): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'tinyllava-pkg-'));
  writeFileSync(path.join(dir, 'manifest.json'), typeof manifest === 'string' ? manifest : JSON.stringify(manifest));
  for (const file of files) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), 'x');
  }
  return dir;
}
