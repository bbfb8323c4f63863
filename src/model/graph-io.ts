// The input and output names each ONNX graph of a package must have (docs/model-package.md,
// "The graphs"). The runtime compares them with the loaded sessions; keeping the names here
// keeps the package format in one layer.

import type { Manifest } from './manifest-types.js';

export interface GraphIO {
  inputs: string[];
  outputs: string[];
}

/** Decoder names for `text.num_layers` layers, in the documented order. */
export function expectedDecoderIO(manifest: Pick<Manifest, 'text'>): GraphIO {
  const inputs = ['inputs_embeds', 'attention_mask', 'position_ids'];
  const outputs = ['logits'];
  for (let i = 0; i < manifest.text.num_layers; i++) {
    inputs.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
    outputs.push(`present.${i}.key`, `present.${i}.value`);
  }
  return { inputs, outputs };
}

export const VISION_ENCODER_IO: Readonly<GraphIO> = { inputs: ['pixel_values'], outputs: ['image_features'] };
export const CONNECTOR_IO: Readonly<GraphIO> = { inputs: ['image_features'], outputs: ['image_embeds'] };
export const EMBED_TOKENS_IO: Readonly<GraphIO> = { inputs: ['input_ids'], outputs: ['inputs_embeds'] };
