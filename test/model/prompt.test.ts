import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { PromptError } from '../../src/model/errors.js';
import type { Manifest } from '../../src/model/manifest-types.js';
import { buildPrompt, IMAGE_TOKEN_INDEX, tokenizePrompt, type PromptEncoder } from '../../src/model/prompt.js';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { exampleManifest } from './helpers/manifest-fixture.js';
import { byteLevelTokenizer, sentencePieceTokenizer, writeTokenizer } from './helpers/tiny-tokenizers.js';

const N = 728;
let byteLevel: TextTokenizer;
let sentencePiece: TextTokenizer;

before(async () => {
  byteLevel = await TextTokenizer.load(writeTokenizer(byteLevelTokenizer()));
  sentencePiece = await TextTokenizer.load(writeTokenizer(sentencePieceTokenizer()));
});

function manifest(overrides: { bos?: number | null; mode?: 'splice' | 'token'; imageTokenId?: number | null } = {}): Manifest {
  const m = exampleManifest();
  m.text.bos_token_id = overrides.bos ?? null;
  m.prompt.image_token_mode = overrides.mode ?? 'splice';
  m.prompt.image_token_id = overrides.imageTokenId ?? null;
  return m;
}

describe('tokenizePrompt, splice mode', () => {
  it('keeps the BOS of the first chunk only (SentencePiece style)', async () => {
    const m = manifest({ bos: 1 });
    const text = 'A USER: <image>\nWhat? ASSISTANT:';
    const [first, second] = await Promise.all(['A USER: ', '\nWhat? ASSISTANT:'].map((c) => sentencePiece.encode(c)));
    assert.equal(first[0], 1);
    assert.equal(second[0], 1);
    const out = await tokenizePrompt(text, 1, m, sentencePiece);
    assert.deepEqual(out.ids, [...first, IMAGE_TOKEN_INDEX, ...second.slice(1)]);
    assert.deepEqual(out.segments, [
      { type: 'text', ids: first },
      { type: 'image', index: 0 },
      { type: 'text', ids: second.slice(1) },
    ]);
    assert.equal(out.inputLength, first.length + N + second.length - 1);
    assert.deepEqual(out.imageSpans, [[first.length, N]]);
  });

  it('tokenizes chunks separately (byte-level, no BOS)', async () => {
    const out = await tokenizePrompt('x <image>\n<image>\ny', 2, manifest(), byteLevel);
    const chunks = await Promise.all(['x ', '\n', '\ny'].map((c) => byteLevel.encode(c)));
    assert.deepEqual(out.ids, [...chunks[0], -200, ...chunks[1], -200, ...chunks[2]]);
    assert.deepEqual(out.imageSpans, [
      [chunks[0].length, N],
      [chunks[0].length + N + chunks[1].length, N],
    ]);
  });

  it('drops empty text runs from the segments', async () => {
    const out = await tokenizePrompt('<image><image>', 2, manifest(), byteLevel);
    assert.deepEqual(out.segments, [
      { type: 'image', index: 0 },
      { type: 'image', index: 1 },
    ]);
    assert.deepEqual(out.ids, [-200, -200]);
    assert.equal(out.inputLength, 2 * N);
  });

  it('refuses a prompt whose placeholders do not match the images', async () => {
    await assert.rejects(tokenizePrompt('<image> x', 2, manifest(), byteLevel), (err: unknown) => err instanceof PromptError && err.code === 'image_count_mismatch');
  });
});

describe('tokenizePrompt, token mode', () => {
  it('finds the image token in one tokenization', async () => {
    const imageId = sentencePiece.tokenToId('<image>')!;
    const m = manifest({ bos: 1, mode: 'token', imageTokenId: imageId });
    const text = 'USER: <image>\nWhat?\nASSISTANT:';
    const whole = await sentencePiece.encode(text);
    const out = await tokenizePrompt(text, 1, m, sentencePiece);
    assert.deepEqual(out.ids, whole.map((id) => (id === imageId ? IMAGE_TOKEN_INDEX : id)));
    const at = whole.indexOf(imageId);
    assert.deepEqual(out.imageSpans, [[at, N]]);
    assert.equal(out.inputLength, whole.length - 1 + N);
  });
});

describe('buildPrompt', () => {
  it('renders and tokenizes in one go', async () => {
    const out = await buildPrompt([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What are these?' }] }], manifest(), byteLevel);
    assert.equal(out.imageCount, 1);
    assert.ok(out.text.endsWith('USER: <image>\nWhat are these? ASSISTANT:'));
    assert.equal(out.ids.filter((id) => id === IMAGE_TOKEN_INDEX).length, 1);
    assert.equal(out.inputLength, out.ids.length - 1 + N);
  });
});

describe('long prompts', () => {
  // Assembly once spread each run into push(): past ~125k ids the call stack overflowed.
  it('assembles runs of hundreds of thousands of ids', async () => {
    const huge: PromptEncoder = { encode: async (text) => Array.from({ length: text.length }, (_, i) => i % 500) };
    const out = await tokenizePrompt(`${'x'.repeat(300_000)}<image>${'y'.repeat(200_000)}`, 1, manifest(), huge);
    assert.equal(out.ids.length, 500_001);
    assert.equal(out.inputLength, 500_000 + N);
  });

  it('refuses a text that surely cannot fit before tokenizing it', async () => {
    let encoded = 0;
    const counting: PromptEncoder = {
      encode: async (text) => {
        encoded += text.length;
        return byteLevel.encode(text);
      },
      minTokens: (length) => byteLevel.minTokens(length),
    };
    const text = 'hello world '.repeat(10_000);
    await assert.rejects(tokenizePrompt(text, 0, manifest(), counting, { maxPositions: 2048 }), (err: unknown) => {
      assert.ok(err instanceof PromptError && err.code === 'too_long', String(err));
      assert.match(err.message, /at least \d+ tokens .* context is 2048/);
      return true;
    });
    assert.equal(encoded, 0, 'nothing was tokenized');
    // a text that may fit is tokenized exactly
    const fits = await tokenizePrompt('hello world', 0, manifest(), counting, { maxPositions: 2048 });
    assert.ok(fits.inputLength > 0 && encoded > 0);
  });

  it('counts images and leaves placeholders out of the text bound', async () => {
    const enc: PromptEncoder = { encode: async () => [1], minTokens: (length) => length };
    // 2 images x 728 positions + 3 text units = 1459 >= 1459
    await assert.rejects(tokenizePrompt('abc<image><image>', 2, manifest(), enc, { maxPositions: 1459 }), /at least 1459 tokens/);
    await tokenizePrompt('abc<image><image>', 2, manifest(), enc, { maxPositions: 1460 });
  });
});
