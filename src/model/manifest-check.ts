// Consistency rules between manifest fields that the JSON Schema cannot state. Each problem is
// one sentence naming the fields and values involved.

import type { Manifest } from './manifest-types.js';

/**
 * Image tokens the vision encoder yields: a grid of floor(image_size / patch_size)^2 patches
 * (the conv stride drops a remainder: SigLIP 384/14 -> 27x27), plus CLIP's class token, minus
 * the first token for `patch` (TinyLLaVA_Factory drops it for SigLIP too: 729 -> 728).
 */
export function imageTokenCount(vision: Manifest['vision']): number {
  const grid = Math.floor(vision.image_size / vision.patch_size);
  const tokens = grid * grid + (vision.family === 'clip' ? 1 : 0);
  return vision.feature_select === 'patch' ? tokens - 1 : tokens;
}

export function consistencyProblems(m: Manifest): string[] {
  const problems: string[] = [];
  const { text, vision, connector, prompt } = m;
  const pp = m.image_preprocessing;

  const tokens = imageTokenCount(vision);
  if (vision.num_image_tokens !== tokens) {
    problems.push(
      `vision.num_image_tokens is ${vision.num_image_tokens}, but ${vision.family} with image_size ` +
        `${vision.image_size}, patch_size ${vision.patch_size} and feature_select "${vision.feature_select}" gives ${tokens}`,
    );
  }
  if (pp.size.height !== vision.image_size || pp.size.width !== vision.image_size) {
    problems.push(
      `image_preprocessing.size is ${pp.size.width}x${pp.size.height}, but the vision encoder takes ` +
        `${vision.image_size}x${vision.image_size} (vision.image_size)`,
    );
  }
  if (connector.input_size !== vision.hidden_size) {
    problems.push(`connector.input_size is ${connector.input_size}, but vision.hidden_size is ${vision.hidden_size}`);
  }
  if (connector.output_size !== text.hidden_size) {
    problems.push(`connector.output_size is ${connector.output_size}, but text.hidden_size is ${text.hidden_size}`);
  }
  if (connector.type === 'identity' && connector.input_size !== connector.output_size) {
    problems.push(`connector.type "identity" needs input_size (${connector.input_size}) = output_size (${connector.output_size})`);
  }
  const tok = m.tokenizer;
  if (tok) {
    for (const [i, id] of tok.added_token_ids.entries()) {
      if (id >= text.vocab_size) problems.push(`tokenizer.added_token_ids[${i}] is ${id}, outside text.vocab_size ${text.vocab_size}`);
    }
    if (tok.decode === 'tokenizer_json' && (tok.added_token_ids.length > 0 || tok.byte_fallback !== 'hf' || tok.run_leading_space !== 'tokenizer_json')) {
      problems.push('tokenizer.decode "tokenizer_json" takes byte_fallback "hf", run_leading_space "tokenizer_json" and no added_token_ids');
    }
    if (tok.decode === 'slow' && tok.run_leading_space === 'tokenizer_json') {
      problems.push('tokenizer.decode "slow" needs run_leading_space "strip" or "keep"');
    }
  }
  if (text.num_attention_heads % text.num_key_value_heads !== 0) {
    problems.push(
      `text.num_attention_heads (${text.num_attention_heads}) is not a multiple of ` +
        `text.num_key_value_heads (${text.num_key_value_heads})`,
    );
  }
  if (m.max_context <= vision.num_image_tokens) {
    problems.push(`max_context (${m.max_context}) leaves no room beside ${vision.num_image_tokens} image tokens`);
  }

  const ids: [string, number | null][] = [
    ['text.bos_token_id', text.bos_token_id],
    ['text.pad_token_id', text.pad_token_id],
    ['prompt.image_token_id', prompt.image_token_id],
    ...text.eos_token_ids.map((id, i): [string, number] => [`text.eos_token_ids[${i}]`, id]),
    ...prompt.stop_token_ids.map((id, i): [string, number] => [`prompt.stop_token_ids[${i}]`, id]),
  ];
  for (const [field, id] of ids) {
    if (id !== null && id >= text.vocab_size) {
      problems.push(`${field} is ${id}, outside text.vocab_size ${text.vocab_size}`);
    }
  }

  // Images reach the prompt only through image_format, so it must produce the placeholder.
  if (!prompt.image_format.includes(prompt.image_placeholder)) {
    problems.push(
      `prompt.image_format ${JSON.stringify(prompt.image_format)} does not contain ` +
        `prompt.image_placeholder ${JSON.stringify(prompt.image_placeholder)}`,
    );
  }
  return problems;
}
