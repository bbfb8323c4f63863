// The cheap bound on token counts (src/model/token-bound.ts): finite for every committed
// fixture tokenizer, never above the exact count, and Infinity wherever one token could swallow
// an unbounded run of text.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { buildTokenByteTable } from '../../src/model/token-bytes.js';
import { unitsPerTokenBound, type TokenizerDocument } from '../../src/model/token-bound.js';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { fixturesDir } from '../support/golden.js';
import { byteLevelTokenizer, sentencePieceTokenizer } from './helpers/tiny-tokenizers.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const packages = join(fixturesDir, 'packages');
const corpus = readFileSync(join(repoRoot, 'tools/export/tinyllava_export/fixtures/corpus.txt'), 'utf8');

/** Texts meant to pack many characters into few tokens, and the opposite. */
const TEXTS = [
  corpus,
  corpus.slice(0, 500),
  ' '.repeat(5000),
  'the '.repeat(2000),
  '\n'.repeat(3000),
  'é'.normalize('NFD').repeat(1000), // composes to fewer characters under NFC
  '\u1f8f'.normalize('NFD').repeat(500), // 4 code points that NFC composes into 1
  '漢字かな交じり文'.repeat(200),
  '🙂'.repeat(500),
  '<|im_start|><|endoftext|>'.repeat(100),
];

describe('token bound', () => {
  for (const name of readdirSync(packages)) {
    it(`${name}: finite, and never more than the exact count`, async () => {
      const tokenizer = await TextTokenizer.load(join(packages, name, 'tokenizer.json'));
      assert.ok(Number.isFinite(tokenizer.unitsPerToken), `${name} has a bound`);
      for (const text of TEXTS) {
        for (const special of [true, false]) {
          const exact = (await tokenizer.encode(text, special)).length;
          assert.ok(tokenizer.minTokens(text.length) <= exact, `${name}: bound ${tokenizer.minTokens(text.length)} > ${exact} for ${JSON.stringify(text.slice(0, 20))}`);
        }
      }
    });
  }

  const bound = (doc: Record<string, unknown>): number => {
    const json = doc as unknown as TokenizerDocument;
    return unitsPerTokenBound(json, buildTokenByteTable(json as unknown as Parameters<typeof buildTokenByteTable>[0]));
  };

  it('the built-in tiny tokenizers have one too', () => {
    assert.ok(Number.isFinite(bound(byteLevelTokenizer())));
    assert.ok(Number.isFinite(bound(sentencePieceTokenizer())));
  });

  const unbounded: [string, (doc: Record<string, any>) => void][] = [
    ['an added token that strips whitespace around it', (d) => (d.added_tokens[0].lstrip = true)],
    ['a normalizer that removes text (Strip)', (d) => (d.normalizer = { type: 'Strip', strip_left: true, strip_right: true })],
    ['a Replace with nothing', (d) => (d.normalizer = { type: 'Replace', pattern: { String: ' ' }, content: '' })],
    ['a pre-tokenizer that drops whitespace', (d) => (d.pre_tokenizer = { type: 'Whitespace' })],
    ['fused <unk>s without byte fallback', (d) => Object.assign(d.model, { unk_token: '<unk>', fuse_unk: true, byte_fallback: false })],
    ['a WordPiece model', (d) => (d.model.type = 'WordPiece')],
  ];
  for (const [what, change] of unbounded) {
    it(`no bound (Infinity) with ${what}`, () => {
      const doc = byteLevelTokenizer() as Record<string, any>;
      change(doc);
      assert.equal(bound(doc), Infinity);
    });
  }

  it('NFC makes the bound 4 times looser', () => {
    const plain = byteLevelTokenizer() as Record<string, any>;
    const nfc = { ...plain, normalizer: { type: 'NFC' } };
    assert.equal(bound(nfc), 4 * bound(plain));
  });
});
