// The tokenizer wrapper on two tiny tokenizers built in code (helpers/tiny-tokenizers.ts).
// The expected ids below are what HF's Python tokenizers (0.20.3, and transformers'
// PreTrainedTokenizerFast) give for the same tokenizer.json files.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { PackageError } from '../../src/model/errors.js';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { byteLevelTokenizer, sentencePieceTokenizer, writeTokenizer } from './helpers/tiny-tokenizers.js';

const TEXTS = ['What are these?', ' the cat', '\nWhat are these? ASSISTANT:', 'héllo wörld 😀 你好', '', '  two  spaces ', 'fine<|endoftext|>USER: x</s>'];

/** Deterministic pseudo-random integers in [0, n). */
function randomInts(seed: number): (n: number) => number {
  let s = seed;
  return (n) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % n;
  };
}

let byteLevel: TextTokenizer;
let sentencePiece: TextTokenizer;

before(async () => {
  byteLevel = await TextTokenizer.load(writeTokenizer(byteLevelTokenizer()));
  sentencePiece = await TextTokenizer.load(writeTokenizer(sentencePieceTokenizer()));
});

describe('TextTokenizer', () => {
  it('encodes like HF (byte-level, no BOS)', async () => {
    assert.deepEqual(await byteLevel.encode('What are these?'), [264, 261, 258, 115, 101, 63]);
    assert.deepEqual(await byteLevel.encode(' the cat'), [258, 32, 99, 262]);
  });

  it('encodes like HF (SentencePiece style, BOS only with special tokens)', async () => {
    assert.deepEqual(await sentencePiece.encode('What are these?'), [1, 363, 359, 356, 342, 328, 290]);
    assert.deepEqual(await sentencePiece.encode('What are these?', false), [363, 359, 356, 342, 328, 290]);
    assert.deepEqual(await sentencePiece.encode(''), [1]);
    // "é" is not in the vocabulary: UTF-8 bytes through byte fallback.
    assert.deepEqual((await sentencePiece.encode('é', false)).map((id) => sentencePiece.idToToken(id)), ['▁', '<0xC3>', '<0xA9>']);
  });

  it('decodes what it encodes', async () => {
    for (const text of TEXTS) {
      assert.equal(await byteLevel.decode(await byteLevel.encode(text)), text);
      assert.equal(await sentencePiece.decode(await sentencePiece.encode(text, false)), text);
    }
  });

  it('knows special tokens', () => {
    const eos = byteLevel.tokenToId('<|endoftext|>');
    assert.ok(eos !== null && byteLevel.isSpecial(eos));
    assert.ok(!byteLevel.isSpecial(32));
    assert.deepEqual([...sentencePiece.specialTokenIds].sort((a, b) => a - b), [0, 1, 2, sentencePiece.tokenToId('<image>')]);
    assert.equal(sentencePiece.idToToken(1), '<s>');
  });

  it('gives each token its bytes', () => {
    const bytes = (t: TextTokenizer, token: string) => Array.from(t.tokenBytes(t.tokenToId(token)!));
    assert.deepEqual(bytes(byteLevel, 'Ġthe'), [0x20, 0x74, 0x68, 0x65]);
    assert.deepEqual(bytes(byteLevel, 'Ã'), [0xc3]); // half of a two-byte character
    assert.deepEqual(bytes(byteLevel, '<|endoftext|>'), Array.from(Buffer.from('<|endoftext|>')));
    assert.deepEqual(bytes(sentencePiece, '▁the'), [0x20, 0x74, 0x68, 0x65]);
    assert.deepEqual(bytes(sentencePiece, '<0xE2>'), [0xe2]);
    assert.deepEqual(Array.from(byteLevel.tokenBytes(1_000_000)), []);
  });

  it('refuses a missing file and a decoder it cannot stream', async () => {
    await assert.rejects(TextTokenizer.load('/nonexistent/tokenizer.json', 'tokenizer.json'), (err: unknown) => {
      assert.ok(err instanceof PackageError);
      assert.match(err.message, /^tokenizer\.json: cannot be loaded as a tokenizer/);
      return true;
    });
    const json = byteLevelTokenizer();
    json.decoder = { type: 'WordPiece', prefix: '##', cleanup: true };
    const file = writeTokenizer(json);
    await assert.rejects(TextTokenizer.load(file, 'tokenizer.json'), /tokenizer\.json: the WordPiece decoder is not supported/);
    writeFileSync(path.join(path.dirname(file), 'tokenizer.json'), '{');
    await assert.rejects(TextTokenizer.load(file), PackageError);
  });
});

describe('DecodeStream', () => {
  it('holds bytes until a character is complete', async () => {
    const ids = await byteLevel.encode('😀!');
    const stream = byteLevel.createDecodeStream();
    assert.deepEqual(ids.map((id) => stream.push(id)), ['', '', '', '😀', '!']);
    assert.equal(stream.flush(), '');
  });

  it('strips the prefix space once, like the Strip decoder', async () => {
    const ids = await sentencePiece.encode('the cat', false);
    const stream = sentencePiece.createDecodeStream();
    assert.equal(ids.map((id) => stream.push(id)).join('') + stream.flush(), 'the cat');
    assert.equal(await sentencePiece.decode(ids), 'the cat');
  });

  it('ends with U+FFFD for a character cut off at the end', () => {
    const stream = byteLevel.createDecodeStream();
    assert.equal(stream.push(byteLevel.tokenToId('ð')!), ''); // 0xF0: first of four bytes
    assert.equal(stream.flush(), '\uFFFD');
  });

  // The contract: push()es + flush() == decode(ids), for any ids, invalid UTF-8 included.
  for (const [name, get] of [['byte-level', () => byteLevel], ['SentencePiece', () => sentencePiece]] as const) {
    for (const skipSpecialTokens of [false, true]) {
      it(`${name}: streaming equals decode() on random ids (skip special: ${skipSpecialTokens})`, async () => {
        const tokenizer = get();
        const next = randomInts(skipSpecialTokens ? 7 : 3);
        for (let trial = 0; trial < 300; trial++) {
          const ids = Array.from({ length: 1 + next(12) }, () => next(tokenizer.vocabSize));
          const stream = tokenizer.createDecodeStream({ skipSpecialTokens });
          const streamed = ids.map((id) => stream.push(id)).join('') + stream.flush();
          assert.equal(streamed, await tokenizer.decode(ids, skipSpecialTokens), `ids ${JSON.stringify(ids)}`);
        }
      });
    }
  }
});
