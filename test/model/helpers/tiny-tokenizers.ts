// Two tiny tokenizer.json documents in the styles of the supported families, built in code so
// that the tests need no download and no Python:
// - byteLevelTokenizer(): GPT-2 style byte-level BPE, no BOS (phi, qwen2, stablelm).
// - sentencePieceTokenizer(): Llama style BPE with byte fallback, "▁" for spaces, a BOS added
//   by the post-processor, and the decoder's Strip of the prefix space (llama, TinyLlama).
// Their layout follows what HF `tokenizers` serialises; Python's tokenizers 0.20 gives the same
// ids for them as the npm binding (checked when they were written).

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

type Json = Record<string, unknown>;

function added(id: number, content: string, special: boolean): Json {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

function bpe(vocab: Record<string, number>, merges: string[], extra: Json): Json {
  return {
    type: 'BPE',
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab,
    merges,
    ...extra,
  };
}

/** Adds the tokens made by `merges` ("a b" -> "ab") to `vocab`, in order. */
function addMerges(vocab: Record<string, number>, merges: string[]): void {
  let next = Object.keys(vocab).length;
  for (const merge of merges) {
    const token = merge.replace(' ', '');
    if (!(token in vocab)) vocab[token] = next++;
  }
}

/** GPT-2's printable stand-in for each byte (the same table the ByteLevel decoder inverts). */
export function byteLevelAlphabet(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + next++));
}

export const BYTE_LEVEL_MERGES = ['Ġ t', 'h e', 'Ġt he', 'Ġ a', 'r e', 'Ġa re', 'a t', 'W h', 'Wh at', 'e s', 'Ġt h', 'Ġth es', 'Ġthes e'];

/** Byte-level BPE; ids 0..255 are the bytes, then the merges, then the added tokens. */
export function byteLevelTokenizer(): Json {
  const vocab: Record<string, number> = {};
  byteLevelAlphabet().forEach((c, i) => (vocab[c] = i));
  addMerges(vocab, BYTE_LEVEL_MERGES);
  const n = Object.keys(vocab).length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [added(n, '<|endoftext|>', true), added(n + 1, '<|im_start|>', true)],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: bpe(vocab, BYTE_LEVEL_MERGES, {}),
  };
}

export const SENTENCE_PIECE_MERGES = ['▁ t', 'h e', '▁t he', '▁ a', 'r e', '▁a re', 'a t', '▁ W', '▁W h', '▁Wh at', 'e s', '▁t h', '▁th es', '▁thes e'];

/**
 * Llama-style: <unk>=0, <s>=1, </s>=2, <0x00>..<0xFF>=3..258, "▁" and printable ASCII, the
 * merges, then "<image>" as a special added token (for image_token_mode "token").
 */
export function sentencePieceTokenizer(): Json {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  let next = 259;
  vocab['▁'] = next++;
  for (let c = 0x21; c <= 0x7e; c++) vocab[String.fromCharCode(c)] = next++;
  addMerges(vocab, SENTENCE_PIECE_MERGES);
  const imageId = Object.keys(vocab).length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [added(0, '<unk>', true), added(1, '<s>', true), added(2, '</s>', true), added(imageId, '<image>', true)],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: bpe(vocab, SENTENCE_PIECE_MERGES, { unk_token: '<unk>', fuse_unk: true, byte_fallback: true }),
  };
}

/** Writes `json` as tokenizer.json in a fresh temporary directory; returns the file's path. */
export function writeTokenizer(json: Json): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'tinyllava-tok-'));
  const file = path.join(dir, 'tokenizer.json');
  writeFileSync(file, JSON.stringify(json));
  return file;
}
