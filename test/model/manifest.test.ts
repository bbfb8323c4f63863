import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { PackageError } from '../../src/model/errors.js';
import { expectedDecoderIO, imageTokenCount, loadPackage, parseManifest } from '../../src/model/manifest.js';
import type { Manifest } from '../../src/model/manifest-types.js';
import { exampleManifest, writePackage } from './helpers/manifest-fixture.js';

/** The PackageError message parseManifest gives after `edit` breaks the example manifest. */
function problemAfter(edit: (m: Record<string, any>) => void): string {
  const m = exampleManifest() as unknown as Record<string, any>;
  edit(m);
  try {
    parseManifest(m);
  } catch (err) {
    assert.ok(err instanceof PackageError);
    assert.equal(err.file, 'manifest.json');
    return err.message;
  }
  assert.fail('the manifest was accepted');
}

describe('manifest schema', () => {
  it('accepts the documented example', () => {
    assert.deepEqual(parseManifest(exampleManifest()), exampleManifest());
  });

  it('accepts the other documented variants', () => {
    const m = exampleManifest();
    m.quantization = { method: 'int4', format: 'MatMulNBits', block_size: 32, symmetric: true };
    m.dtype = 'fp16';
    m.image_preprocessing = {
      ...m.image_preprocessing,
      pad_to_square: true,
      pad_color: [122, 116, 104],
      resize_mode: 'shortest_edge_center_crop',
      shortest_edge: 384,
    };
    m.prompt = { ...m.prompt, image_token_mode: 'token', image_token_id: 1000, system_format: '' };
    m.source.extra = 'provenance may grow';
    parseManifest(m);
  });

  const SLOW = {
    reference: 'LlamaTokenizer (slow)', prefix_space: true, decode: 'slow', byte_fallback: 'sentencepiece',
    run_leading_space: 'strip', added_token_ids: [], added_token_separator: ' ', added_token_metaspace: false,
    clean_up_tokenization_spaces: false, strip_answer: true,
  };
  it('accepts every connector kind and the tokenizer settings', () => {
    const accepted = (edit: (m: Record<string, any>) => void): void => {
      const m = exampleManifest() as unknown as Record<string, any>;
      edit(m);
      parseManifest(m);
    };
    for (const type of ['linear', 'mlp1x_gelu', 'mlp12x_gelu']) accepted((m) => (m.connector.type = type));
    accepted((m) => (m.tokenizer = SLOW));
    accepted((m) => {
      m.image_preprocessing.resize_mode = 'squash_center_crop';
      m.image_preprocessing.resize_size = { height: 420, width: 400 };
      m.image_preprocessing.resample = 'lanczos';
    });
  });

  const cases: [string, (m: Record<string, any>) => void, string][] = [
    ['a wrong type', (m) => (m.text.num_layers = 'x'), 'manifest.json: text.num_layers must be an integer, got "x"'],
    ['a missing field', (m) => delete m.text.head_dim, 'manifest.json: text.head_dim is missing'],
    ['a missing top-level field', (m) => delete m.prompt, 'manifest.json: prompt is missing'],
    ['an unknown family', (m) => (m.vision.family = 'vit'), 'manifest.json: vision.family must be one of "siglip", "clip", got "vit"'],
    ['an unknown field', (m) => (m.text.rope = 1), 'manifest.json: text.rope is not a field of this format'],
    ['another format version', (m) => (m.format_version = 2), 'manifest.json: format_version must be 1, got 2'],
    ['an unknown resize mode', (m) => (m.image_preprocessing.resize_mode = 'fit'), 'image_preprocessing.resize_mode must be one of "squash", "shortest_edge_center_crop", "squash_center_crop", got "fit"'],
    ['an unknown feature_select', (m) => (m.vision.feature_select = 'cls'), 'vision.feature_select must be one of "patch", "cls_patch", got "cls"'],
    ['an unknown image_token_mode', (m) => (m.prompt.image_token_mode = 'inline'), 'prompt.image_token_mode must be one of "splice", "token", got "inline"'],
    ['an unknown dtype', (m) => (m.dtype = 'bf16'), 'dtype must be one of "fp32", "fp16", got "bf16"'],
    ['crop mode without shortest_edge', (m) => (m.image_preprocessing.resize_mode = 'shortest_edge_center_crop'), 'image_preprocessing.shortest_edge must be an integer, got null (resize_mode shortest_edge_center_crop needs it)'],
    ['padding without a colour', (m) => (m.image_preprocessing.pad_to_square = true), 'image_preprocessing.pad_color must be an array, got null (pad_to_square needs a pad colour)'],
    ['token mode without an id', (m) => (m.prompt.image_token_mode = 'token'), 'prompt.image_token_id must be an integer, got null'],
    ['an id in splice mode', (m) => (m.prompt.image_token_id = 5), 'prompt.image_token_id must be null, got 5'],
    ['a path out of the package', (m) => (m.files.decoder = '../x.onnx'), "files.decoder must be a relative path inside the package (forward slashes, no '..'), got \"../x.onnx\""],
    ['an absolute path', (m) => (m.files.decoder = '/etc/passwd'), 'files.decoder must be a relative path inside the package'],
    ['a format without its slot', (m) => (m.prompt.user_format = 'USER: '), 'prompt.user_format must contain {content}, got "USER: "'],
    ['a zero std', (m) => (m.image_preprocessing.image_std = [0.5, 0, 0.5]), 'image_preprocessing.image_std[1] must be > 0, got 0'],
    ['a short colour', (m) => { m.image_preprocessing.pad_to_square = true; m.image_preprocessing.pad_color = [1, 2]; }, 'image_preprocessing.pad_color must have at least 3 items, got [1,2]'],
    ['no eos', (m) => (m.text.eos_token_ids = []), 'text.eos_token_ids must have at least 1 item, got []'],
    ['a negative id', (m) => (m.text.pad_token_id = -1), 'text.pad_token_id must be >= 0, got -1'],
    ['an incomplete quantization', (m) => (m.quantization = { method: 'int4', format: 'MatMulNBits', block_size: 32 }), 'quantization.symmetric is missing'],
    // Cross-field rules, checked after the schema.
    ['a wrong image token count', (m) => (m.vision.num_image_tokens = 729), 'vision.num_image_tokens is 729, but siglip with image_size 384, patch_size 14 and feature_select "patch" gives 728'],
    ['a size that is not the encoder input', (m) => (m.image_preprocessing.size = { height: 336, width: 336 }), 'image_preprocessing.size is 336x336, but the vision encoder takes 384x384'],
    ['a connector that does not fit', (m) => (m.connector.output_size = 65), 'connector.output_size is 65, but text.hidden_size is 64'],
    ['heads that do not group', (m) => (m.text.num_key_value_heads = 3), 'text.num_attention_heads (4) is not a multiple of text.num_key_value_heads (3)'],
    ['an id past the vocabulary', (m) => (m.prompt.stop_token_ids = [0, 1024]), 'prompt.stop_token_ids[1] is 1024, outside text.vocab_size 1024'],
    ['an image format without the placeholder', (m) => (m.prompt.image_format = '{content}'), 'prompt.image_format "{content}" does not contain prompt.image_placeholder "<image>"'],
    ['a context shorter than an image', (m) => (m.max_context = 728), 'max_context (728) leaves no room beside 728 image tokens'],
    ['an unknown connector', (m) => (m.connector.type = 'resampler'), 'connector.type must be linear, identity or mlpNx_gelu (N >= 1)'],
    ['mlp0x_gelu', (m) => (m.connector.type = 'mlp0x_gelu'), 'connector.type must be linear, identity or mlpNx_gelu'],
    ['an identity that changes size', (m) => (m.connector.type = 'identity'), 'connector.type "identity" needs input_size (32) = output_size (64)'],
    ['squash_center_crop without resize_size', (m) => (m.image_preprocessing.resize_mode = 'squash_center_crop'), 'image_preprocessing.resize_size is missing'],
    ['resize_size in squash mode', (m) => (m.image_preprocessing.resize_size = { height: 400, width: 400 }), 'image_preprocessing.resize_size must be null'],
    ['an unknown filter', (m) => (m.image_preprocessing.resample = 'mitchell'), 'image_preprocessing.resample must be one of'],
    ['an added token past the vocabulary', (m) => (m.tokenizer = { ...SLOW, added_token_ids: [5000] }), 'tokenizer.added_token_ids[0] is 5000, outside text.vocab_size 1024'],
    ['slow settings with tokenizer_json decoding', (m) => (m.tokenizer = { ...SLOW, decode: 'tokenizer_json' }), 'tokenizer.decode "tokenizer_json" takes byte_fallback "hf"'],
  ];
  for (const [what, edit, message] of cases) {
    it(`rejects ${what}`, () => {
      const got = problemAfter(edit);
      assert.ok(got.includes(message), `${JSON.stringify(got)} should include ${JSON.stringify(message)}`);
    });
  }

  it('reports every problem at once', () => {
    const got = problemAfter((m) => {
      m.text.num_layers = 0;
      m.vision.hidden_size = 'wide';
    });
    assert.match(got, /text\.num_layers must be >= 1, got 0; vision\.hidden_size must be an integer, got "wide"/);
  });
});

describe('imageTokenCount', () => {
  const v = exampleManifest().vision;
  it('drops the first token for "patch", also for SigLIP (728)', () => assert.equal(imageTokenCount(v), 728));
  it('keeps every token for "cls_patch" (729)', () => assert.equal(imageTokenCount({ ...v, feature_select: 'cls_patch' }), 729));
  it('counts CLIP-L/14@336 as 577 - CLS = 576', () => assert.equal(imageTokenCount({ ...v, family: 'clip', image_size: 336 }), 576));
});

describe('expectedDecoderIO', () => {
  it('names the inputs and outputs per layer', () => {
    assert.deepEqual(expectedDecoderIO(exampleManifest()), {
      inputs: ['inputs_embeds', 'attention_mask', 'position_ids', 'past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value'],
      outputs: ['logits', 'present.0.key', 'present.0.value', 'present.1.key', 'present.1.value'],
    });
  });
});

describe('loadPackage', () => {
  it('loads a package and resolves its files', async () => {
    const dir = writePackage(exampleManifest());
    try {
      const pkg = await loadPackage(dir);
      assert.equal(pkg.manifest.name, 'tiny-random-qwen2-siglip');
      assert.equal(pkg.paths.decoder, path.join(dir, 'onnx/decoder_model_merged.onnx'));
      assert.equal(pkg.paths.tokenizer, path.join(dir, 'tokenizer.json'));
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  async function loadError(manifest: unknown, files?: string[], prepare?: (dir: string) => void): Promise<PackageError> {
    const dir = writePackage(manifest, files);
    try {
      prepare?.(dir);
      await loadPackage(dir);
    } catch (err) {
      assert.ok(err instanceof PackageError, String(err));
      return err;
    } finally {
      rmSync(dir, { recursive: true });
    }
    assert.fail('the package was accepted');
  }

  it('names a missing file', async () => {
    const m: Manifest = exampleManifest();
    const err = await loadError(m, [m.files.vision_encoder, m.files.connector, m.files.embed_tokens, m.files.tokenizer]);
    assert.equal(err.file, 'onnx/decoder_model_merged.onnx');
    assert.equal(err.message, 'onnx/decoder_model_merged.onnx: is missing (named by manifest.json files.decoder)');
  });

  it('names an empty file', async () => {
    const err = await loadError(exampleManifest(), undefined, (dir) => writeFileSync(path.join(dir, 'tokenizer.json'), ''));
    assert.equal(err.message, 'tokenizer.json: is empty (named by manifest.json files.tokenizer)');
  });

  it('rejects invalid JSON and a missing manifest', async () => {
    assert.match((await loadError('{ "format": ')).message, /^manifest\.json: is not valid JSON/);
    await assert.rejects(loadPackage(path.join(tmpdir(), 'tinyllava-no-such-package')), /^PackageError: manifest\.json: not found in .*npm run export/);
  });
});
