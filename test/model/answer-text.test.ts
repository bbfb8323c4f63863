// The answer text against the reference tokenizers (test/fixtures/packages/*: each package's
// tokenizer_check.json holds what its slow, or fast, transformers tokenizer decodes for 160
// adversarial id sequences and encodes for the template's chunks; loading a package verifies
// them, see golden.test.ts). Here: the streaming stages against their whole-text definitions,
// and the cases the issue names, on the fixture tokenizers themselves.

import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { AnswerStrip, CleanUpStream, cleanUpTokenization } from '../../src/model/answer-text.js';
import { decodeUtf8PerByte } from '../../src/model/decode-stream.js';
import { PackageError } from '../../src/model/errors.js';
import { loadPackage } from '../../src/model/manifest.js';
import { loadPackageTokenizer, type TokenizerCheck } from '../../src/model/tokenizer-check.js';
import { fixturesDir } from '../support/golden.js';

const packageDir = (name: string): string => path.join(fixturesDir, 'packages', name);

async function tokenizerOf(name: string) {
  return loadPackageTokenizer(await loadPackage(packageDir(name)));
}

async function answer(name: string, ids: number[]): Promise<string> {
  const stream = (await tokenizerOf(name)).createAnswerStream();
  return ids.map((id) => stream.push(id)).join('') + stream.flush();
}

function randomInts(seed: number): (n: number) => number {
  let s = seed;
  return (n) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % n;
  };
}

describe('clean_up_tokenization_spaces, streamed', () => {
  it('equals the whole-text replace chain however the text is cut', () => {
    const rand = randomInts(7);
    const alphabet = [' ', ' ', ' ', '.', '?', '!', ',', "'", 'n', 't', 'm', 's', 'v', 'e', 'r', 'a', 'x', '\n'];
    for (let trial = 0; trial < 3000; trial++) {
      let text = '';
      for (let i = rand(24); i >= 0; i--) text += alphabet[rand(alphabet.length)];
      const stream = new CleanUpStream();
      let out = '';
      for (let i = 0; i < text.length; ) {
        const n = 1 + rand(4);
        out += stream.push(text.slice(i, i + n));
        i += n;
      }
      out += stream.flush();
      assert.equal(out, cleanUpTokenization(text), JSON.stringify(text));
    }
  });

  it('is transformers’ chain, order included', () => {
    assert.equal(cleanUpTokenization("Hello , world . Is n't it ? I 'm sure ' quoted ' !"), "Hello, world. Isn't it? I'm sure'quoted '!"); // " !" goes first
    assert.equal(cleanUpTokenization('a  .'), 'a .'); // one non-overlapping pass per pattern
  });
});

describe('the answer strip, streamed', () => {
  it("removes Python's str.isspace() characters at both ends, only those", () => {
    const strip = (parts: string[]): string => {
      const s = new AnswerStrip();
      return parts.map((p) => s.push(p)).join('') + s.flush();
    };
    assert.equal(strip([' \n', ' The', ' cat', ' \t', ' ', '']), 'The cat');
    assert.equal(strip(['\x1c\x1f\x85\u3000a b\u2028']), 'a b'); // Python strips these, trim() does not all
    assert.equal(strip(['\ufeffa\ufeff']), '\ufeffa\ufeff'); // trim() would strip U+FEFF, Python does not
    assert.equal(strip(['a ', ' ', 'b ']), 'a  b');
    assert.equal(strip(['   ']), '');
  });
});

describe('SentencePiece byte runs', () => {
  it('decode per byte: valid characters kept, each invalid byte one U+FFFD', () => {
    const bytes = (...b: number[]) => Uint8Array.from(b);
    assert.equal(decodeUtf8PerByte(bytes(0x45, 0x95)), 'E\ufffd');
    assert.equal(decodeUtf8PerByte(bytes(0xe4, 0xbd)), '\ufffd\ufffd'); // not one per maximal subpart
    assert.equal(decodeUtf8PerByte(bytes(0xe4, 0xbd, 0xa0)), '你');
    assert.equal(decodeUtf8PerByte(bytes(0xed, 0xa0, 0x80, 0xc0, 0xaf)), '\ufffd'.repeat(5)); // surrogate, overlong
    assert.equal(decodeUtf8PerByte(bytes(0xef, 0xbb, 0xbf)), '\ufeff');
  });

  it('<0x45><0x95> reads "E\\uFFFD" with a slow Llama tokenizer, as the reference', async () => {
    const tok = await tokenizerOf('tiny-random-llama-siglip');
    const ids = ['<0x45>', '<0x95>'].map((t) => tok.tokenToId(t)!);
    assert.equal(await answer('tiny-random-llama-siglip', ids), 'E\ufffd');
    // tokenizer.json's own decoder (transformers' fast tokenizer) makes it two replacement characters
    assert.equal(await tok.decode(ids), '\ufffd\ufffd');
  });
});

describe('reference quirks the fixture tokenizers reproduce', () => {
  it("phi-2's whitespace added tokens gain spaces, and clean-up applies (slow CodeGenTokenizer)", async () => {
    const tok = await tokenizerOf('tiny-bench-phi-siglip');
    const four = tok.tokenToId('    ')!;
    const ids = [...(await tok.encode('def', false)), tok.tokenToId('Ċ')!, four, ...(await tok.encode('x ,', false))];
    assert.equal(await answer('tiny-bench-phi-siglip', ids), 'def\n      x,');
  });

  it('legacy:false Llama (TinyLlama-Chat): one "▁" before each chunk, also before its leading space', async () => {
    const tok = await tokenizerOf('tiny-factory-tinyllama-chat');
    const ids = await tok.encode(' ASSISTANT:');
    assert.ok(tok.idToToken(ids[1])!.startsWith('▁▁'), tok.idToToken(ids[1])!); // the prefix and the text's own space
    assert.deepEqual((await tok.encode('</s>USER:')).slice(0, 2), [1, 2]); // no "▁" before a leading special token
  });

  it('every fixture package has a tokenizer check, and it is verified at load', async () => {
    const names = readdirSync(path.join(fixturesDir, 'packages'));
    assert.ok(names.length >= 9);
    for (const name of names) {
      const pkg = await loadPackage(packageDir(name));
      assert.ok(pkg.paths.tokenizer_check, name);
      const check = JSON.parse(readFileSync(pkg.paths.tokenizer_check, 'utf8')) as TokenizerCheck;
      assert.ok(check.decode.length >= 100 && check.encode.length > 10, name);
      await loadPackageTokenizer(pkg);
    }
  });

  it('a package whose check the server does not reproduce is refused, naming the case', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tokcheck-'));
    const src = packageDir('tiny-random-qwen2-siglip');
    for (const f of ['manifest.json', 'tokenizer.json', 'tokenizer_check.json']) copyFileSync(path.join(src, f), path.join(dir, f));
    const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    for (const f of ['vision_encoder', 'connector', 'embed_tokens', 'decoder']) {
      writeFileSync(path.join(dir, path.basename(manifest.files[f])), 'x');
      manifest.files[f] = path.basename(manifest.files[f]);
    }
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
    const check = JSON.parse(readFileSync(path.join(dir, 'tokenizer_check.json'), 'utf8')) as TokenizerCheck;
    check.decode[3].text += '!';
    writeFileSync(path.join(dir, 'tokenizer_check.json'), JSON.stringify(check));
    await assert.rejects(loadPackageTokenizer(await loadPackage(dir)), (err: unknown) => {
      assert.ok(err instanceof PackageError);
      assert.match(err.message, /does not reproduce the reference tokenizer \(Qwen2Tokenizer \(slow\)\): decoding \[/);
      return true;
    });
  });
});
