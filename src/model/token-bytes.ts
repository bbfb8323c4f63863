// The UTF-8 bytes each token id stands for, read from tokenizer.json. The engine needs them to
// stream text without breaking multi-byte characters (a token may hold half a character) and
// for the `bytes` field of OpenAI logprobs. The mapping follows the tokenizer's own decoder:
//
// - ByteLevel (GPT-2 style: phi, qwen2, stablelm): every character of a token stands for one
//   byte through GPT-2's byte-to-printable-character table; a token with a character outside
//   that table (an added token such as "<|endoftext|>" with a space) is its own UTF-8.
// - SentencePiece style (llama, gemma): Replace("▁" -> " ") / Metaspace, ByteFallback
//   ("<0xE2>" is the byte 0xE2), Fuse, and Strip(" ", n, 0) which removes up to n leading
//   spaces of the whole decoded text (the prefix space SentencePiece adds before the first
//   word). That one depends on position, so it is reported as `stripLeading`, not folded in.

import { readFile } from 'node:fs/promises';
import { PackageError } from './errors.js';

export interface TokenByteTable {
  /** Bytes per token id; ids without a token map to an empty array. */
  bytes: Uint8Array[];
  /** Ids of the tokens tokenizer.json marks special (skipped by skip_special_tokens). */
  specialIds: Set<number>;
  /** The raw text of each added token (what a slow tokenizer inserts for it). */
  contents: Map<number, string>;
  /**
   * ByteFallback tokenizers: 1 for the "<0xHH>" tokens. A run of them decodes to its UTF-8
   * text if the whole run is valid, else to one U+FFFD per byte (HF's ByteFallback decoder).
   * Null for byte-level tokenizers, which decode all bytes together, lossily.
   */
  byteTokens: Uint8Array | null;
  /** SentencePiece-style tables: each id's vocabulary string ("▁the", "<0x0A>"), and the reverse. */
  pieces: (string | undefined)[] | null;
  pieceIds: Map<string, number> | null;
  /** Remove up to this many leading `stripChar` characters from the start of a decoded text. */
  stripLeading: number;
  stripChar: string;
}

interface TokenizerJson {
  added_tokens?: { id: number; content: string; special: boolean }[];
  model: { type?: string; vocab: Record<string, number> | [string, number][] };
  decoder: DecoderJson | null;
}

interface DecoderJson {
  type: string;
  decoders?: DecoderJson[];
  pattern?: { String?: string; Regex?: string };
  content?: string;
  start?: number;
  stop?: number;
  replacement?: string;
  prepend_scheme?: string;
  add_prefix_space?: boolean;
}

/** One step of a SentencePiece-style decoder chain, applied to one token's text. */
type TokenStep = (token: string) => string;

const BYTE_FALLBACK = /^<0x([0-9A-Fa-f]{2})>$/;

export async function readTokenByteTable(file: string, fileLabel = 'tokenizer.json'): Promise<TokenByteTable> {
  const json = JSON.parse(await readFile(file, 'utf8')) as TokenizerJson;
  return buildTokenByteTable(json, fileLabel);
}

export function buildTokenByteTable(json: TokenizerJson, fileLabel = 'tokenizer.json'): TokenByteTable {
  const tokens = tokensById(json);
  const specialIds = new Set((json.added_tokens ?? []).filter((t) => t.special).map((t) => t.id));
  const contents = new Map((json.added_tokens ?? []).map((t) => [t.id, t.content] as [number, string]));
  const decoders = flatten(json.decoder);
  const encoder = new TextEncoder();
  const bytes: Uint8Array[] = new Array(tokens.length);

  if (decoders.some((d) => d.type === 'ByteLevel')) {
    const charToByte = byteLevelCharToByte();
    for (let id = 0; id < tokens.length; id++) {
      const token = tokens[id] ?? '';
      const mapped = Array.from(token, (c) => charToByte.get(c));
      bytes[id] = mapped.every((b) => b !== undefined) ? Uint8Array.from(mapped as number[]) : encoder.encode(token);
    }
    return { bytes, specialIds, contents, pieces: null, pieceIds: null, byteTokens: null, stripLeading: 0, stripChar: ' ' };
  }

  // SentencePiece style: per-token text steps, byte fallback, and a leading strip.
  const steps: TokenStep[] = [];
  let byteFallback = false;
  let stripLeading = 0;
  let stripChar = ' ';
  for (const d of decoders) {
    switch (d.type) {
      case 'Replace': {
        const from = d.pattern?.String;
        if (from === undefined) throw unsupported(fileLabel, 'a Replace decoder with a regex pattern');
        const to = d.content ?? '';
        steps.push((t) => t.split(from).join(to));
        break;
      }
      case 'Metaspace': {
        const replacement = d.replacement ?? '▁';
        steps.push((t) => t.split(replacement).join(' '));
        // Metaspace drops the prefix space of the first token unless prepending is off.
        const prepends = d.prepend_scheme ? d.prepend_scheme !== 'never' : d.add_prefix_space !== false;
        if (prepends) stripLeading = Math.max(stripLeading, 1);
        break;
      }
      case 'ByteFallback':
        byteFallback = true;
        break;
      case 'Fuse':
        break;
      case 'Strip':
        if ((d.stop ?? 0) !== 0) throw unsupported(fileLabel, 'a Strip decoder that strips the end');
        stripLeading = d.start ?? 0;
        stripChar = d.content ?? ' ';
        break;
      default:
        throw unsupported(fileLabel, `the ${d.type} decoder`);
    }
  }
  const byteTokens = byteFallback ? new Uint8Array(tokens.length) : null;
  for (let id = 0; id < tokens.length; id++) {
    const token = tokens[id] ?? '';
    const byte = byteFallback ? BYTE_FALLBACK.exec(token) : null;
    if (byte && byteTokens) byteTokens[id] = 1;
    bytes[id] = byte ? Uint8Array.of(parseInt(byte[1], 16)) : encoder.encode(steps.reduce((t, step) => step(t), token));
  }
  const pieceIds = new Map<string, number>();
  tokens.forEach((t, id) => t !== undefined && pieceIds.set(t, id));
  return { bytes, specialIds, contents, pieces: tokens, pieceIds, byteTokens, stripLeading, stripChar };
}

/** Token text per id: the model's vocabulary, overridden by added tokens. */
function tokensById(json: TokenizerJson): (string | undefined)[] {
  const tokens: (string | undefined)[] = [];
  const vocab = json.model.vocab;
  if (Array.isArray(vocab)) {
    vocab.forEach(([piece], id) => (tokens[id] = piece)); // Unigram: [piece, score] by id
  } else {
    for (const [token, id] of Object.entries(vocab)) tokens[id] = token;
  }
  for (const t of json.added_tokens ?? []) tokens[t.id] = t.content;
  return tokens;
}

function flatten(decoder: DecoderJson | null): DecoderJson[] {
  if (!decoder) return [];
  return decoder.type === 'Sequence' ? (decoder.decoders ?? []).flatMap(flatten) : [decoder];
}

/**
 * GPT-2's reversible byte <-> printable character table: printable Latin-1 bytes map to
 * themselves, the other 68 bytes to U+0100 onwards in byte order.
 */
function byteLevelCharToByte(): Map<string, number> {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const map = new Map<string, number>();
  let next = 0;
  for (let b = 0; b < 256; b++) {
    map.set(String.fromCodePoint(printable(b) ? b : 256 + next++), b);
  }
  return map;
}

function unsupported(fileLabel: string, what: string): PackageError {
  return new PackageError(fileLabel, `${what} is not supported (streaming needs each token's bytes)`);
}
