// Checks at load time that each graph has the inputs and outputs docs/model-package.md promises
// (the names come from the model layer), so that a package whose decoder does not match its
// manifest's num_layers fails with a message naming the file, not with an ORT error on the
// first request.

import { CONNECTOR_IO, EMBED_TOKENS_IO, expectedDecoderIO, VISION_ENCODER_IO, type GraphIO, type Manifest } from '../model/index.js';
import type { GraphName } from './worker-protocol.js';

export function expectedGraphIo(graph: GraphName, numLayers: number): GraphIO {
  switch (graph) {
    case 'vision_encoder':
      return VISION_ENCODER_IO;
    case 'connector':
      return CONNECTOR_IO;
    case 'embed_tokens':
      return EMBED_TOKENS_IO;
    case 'decoder':
      return expectedDecoderIO({ text: { num_layers: numLayers } } as Pick<Manifest, 'text'>);
  }
}

/** A shared_kv decoder (GroupQueryAttention over one past/present buffer) declares seqlens_k. */
export function isSharedKvDecoder(inputNames: readonly string[]): boolean {
  return inputNames.includes('seqlens_k');
}

export function checkGraphIo(
  graph: GraphName,
  path: string,
  inputNames: readonly string[],
  outputNames: readonly string[],
  numLayers: number,
): void {
  const want = expectedGraphIo(graph, numLayers);
  const problems: string[] = [];
  for (const [kind, expected, actual] of [
    ['inputs', want.inputs, inputNames],
    ['outputs', want.outputs, outputNames],
  ] as const) {
    const missing = expected.filter((n) => !actual.includes(n));
    const extra = actual.filter((n) => !expected.includes(n));
    if (missing.length > 0) problems.push(`missing ${kind} ${list(missing)}`);
    if (extra.length > 0) problems.push(`unexpected ${kind} ${list(extra)}`);
  }
  if (problems.length > 0) {
    const layers = graph === 'decoder' ? ` for num_layers=${numLayers} in manifest.json` : '';
    throw new Error(`${path}: the ${graph} graph does not match the package format${layers}: ${problems.join('; ')}`);
  }
}

function list(names: readonly string[]): string {
  const shown = names.slice(0, 6).join(', ');
  return names.length > 6 ? `${shown} (+${names.length - 6} more)` : shown;
}
