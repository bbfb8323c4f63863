// The model layer against the reference outputs committed under test/fixtures/ (made by HF
// transformers and PIL; format in test/fixtures/README.md):
// - prompts: rendering, chunk-wise tokenization and image positions equal each golden case's
//   prompt, prompt_ids, input_length and image_spans; the streamed answer text of greedy_ids
//   equals the reference's (answer_text); the package's tokenizer_check.json passes;
// - pixels: decode + pad/resize/crop of every test image equals golden/pixels/<id>/<image>.png
//   byte for byte.
// Missing fixture folders skip these tests; a folder that exists but is empty fails them.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { decodeImage } from '../../src/model/image/decode.js';
import { resizeForModel } from '../../src/model/image/preprocess.js';
import { loadPackage } from '../../src/model/manifest.js';
import type { ImagePreprocessing } from '../../src/model/manifest-types.js';
import { buildPrompt } from '../../src/model/prompt.js';
import type { PromptMessage } from '../../src/model/template.js';
import { loadPackageTokenizer } from '../../src/model/tokenizer-check.js';
import { fixturesDir, type Golden, type GoldenCase } from '../support/golden.js';

const goldenDir = path.join(fixturesDir, 'golden');
const pixelsDir = path.join(goldenDir, 'pixels');

function goldenFiles(): Golden[] {
  return readdirSync(goldenDir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(path.join(goldenDir, f), 'utf8')) as Golden);
}

/** The case's messages, with its `system` (when set) as a leading system message. */
function caseMessages(c: GoldenCase): PromptMessage[] {
  const messages: PromptMessage[] = c.messages.map((m) => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? p : { type: 'image' as const })),
  }));
  const hasSystem = messages.some((m) => m.role === 'system');
  return c.system !== null && !hasSystem ? [{ role: 'system', content: c.system }, ...messages] : messages;
}

describe('golden prompts', { skip: existsSync(goldenDir) ? false : `no ${goldenDir}` }, () => {
  const goldens = existsSync(goldenDir) ? goldenFiles() : [];
  it('has golden files', () => assert.ok(goldens.length > 0, `${goldenDir} holds no golden .json file`));

  for (const golden of goldens) {
    describe(golden.package, () => {
      for (const c of golden.cases) {
        it(c.name, async () => {
          const pkg = await loadPackage(path.join(fixturesDir, 'packages', golden.package));
          const tokenizer = await loadPackageTokenizer(pkg); // runs tokenizer_check.json
          const built = await buildPrompt(caseMessages(c), pkg.manifest, tokenizer);
          assert.equal(built.text, c.prompt);
          assert.deepEqual(built.ids, c.prompt_ids);
          assert.equal(built.inputLength, c.input_length);
          assert.deepEqual(built.imageSpans, c.image_spans);

          // Streaming the generated ids gives the reference's answer text.
          const stream = tokenizer.createAnswerStream();
          const streamed = c.greedy_ids.map((id) => stream.push(id)).join('') + stream.flush();
          assert.equal(streamed, c.answer_text);
        });
      }
    });
  }
});

describe('golden pixels', { skip: existsSync(pixelsDir) ? false : `no ${pixelsDir}` }, () => {
  const ids = existsSync(pixelsDir) ? readdirSync(pixelsDir).sort() : [];
  it('has preprocessing folders', () => assert.ok(ids.length > 0, `${pixelsDir} is empty`));

  // Each preprocessing id's settings come from a package whose golden file names that id.
  const settings = new Map<string, ImagePreprocessing>();
  if (existsSync(goldenDir)) {
    for (const golden of goldenFiles()) {
      const manifestFile = path.join(fixturesDir, 'packages', golden.package, 'manifest.json');
      const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as { image_preprocessing: ImagePreprocessing };
      settings.set(golden.preprocessing_id, manifest.image_preprocessing);
    }
  }
  const images = existsSync(path.join(fixturesDir, 'images')) ? readdirSync(path.join(fixturesDir, 'images')) : [];

  for (const id of ids) {
    describe(id, () => {
      const pngs = readdirSync(path.join(pixelsDir, id)).filter((f) => f.endsWith('.png')).sort();
      it('has reference images and settings', () => {
        assert.ok(pngs.length > 0, `${path.join(pixelsDir, id)} holds no .png`);
        assert.ok(settings.has(id), `no golden file names preprocessing_id ${id}`);
      });
      for (const png of pngs) {
        it(png, async () => {
          const stem = png.slice(0, -'.png'.length);
          const source = images.find((f) => f.slice(0, f.lastIndexOf('.')) === stem);
          assert.ok(source, `no test image named ${stem}.* in ${path.join(fixturesDir, 'images')}`);
          const pp = settings.get(id);
          assert.ok(pp);
          const decoded = await decodeImage(readFileSync(path.join(fixturesDir, 'images', source)), { maxPixels: 1e8 });
          const ours = resizeForModel(decoded, pp);
          const ref = await sharp(path.join(pixelsDir, id, png)).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
          assert.equal(`${ours.width}x${ours.height}`, `${ref.info.width}x${ref.info.height}`);
          let differing = 0;
          let maxDiff = 0;
          for (let i = 0; i < ref.data.length; i++) {
            const d = Math.abs(ref.data[i] - ours.data[i]);
            if (d > 0) differing++;
            if (d > maxDiff) maxDiff = d;
          }
          assert.equal(differing, 0, `${differing} of ${ref.data.length} bytes differ (max ${maxDiff})`);
        });
      }
    });
  }
});
