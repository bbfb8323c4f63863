// Loads a package's tokenizer with its manifest settings and, when the package has a
// tokenizer_check.json (written by the exporter from the reference tokenizer), proves that this
// server tokenizes and detokenizes exactly as the reference does on it: the template's prompt
// chunks and texts around special tokens must give the reference's ids, and adversarial id
// sequences (byte-fallback runs, whitespace, added and special tokens, clean-up patterns) the
// reference's answer text. A difference stops the load with the first case that differs.

import { readFile } from 'node:fs/promises';
import { DEFAULT_TOKENIZER_SETTINGS } from './answer-text.js';
import { PackageError } from './errors.js';
import type { ModelPackage } from './manifest.js';
import { TextTokenizer } from './tokenizer.js';

export interface TokenizerCheck {
  reference: string;
  encode: { text: string; ids: number[] }[];
  decode: { ids: number[]; text: string }[];
}

export async function loadPackageTokenizer(pkg: ModelPackage): Promise<TextTokenizer> {
  const { manifest, paths } = pkg;
  const tokenizer = await TextTokenizer.load(paths.tokenizer, manifest.files.tokenizer, manifest.tokenizer ?? DEFAULT_TOKENIZER_SETTINGS);
  if (paths.tokenizer_check && manifest.files.tokenizer_check) {
    const label = manifest.files.tokenizer_check;
    let check: TokenizerCheck;
    try {
      check = JSON.parse(await readFile(paths.tokenizer_check, 'utf8')) as TokenizerCheck;
    } catch (err) {
      throw new PackageError(label, `cannot be read: ${(err as Error).message}`);
    }
    const problem = await tokenizerCheckProblem(tokenizer, check);
    if (problem) throw new PackageError(label, `this server does not reproduce the reference tokenizer (${check.reference}): ${problem}`);
  }
  return tokenizer;
}

/** The first case where `tokenizer` differs from the reference, as a sentence, or null. */
export async function tokenizerCheckProblem(tokenizer: TextTokenizer, check: TokenizerCheck): Promise<string | null> {
  for (const c of check.encode ?? []) {
    const ids = await tokenizer.encode(c.text, true);
    if (ids.length !== c.ids.length || ids.some((id, i) => id !== c.ids[i])) {
      return `encoding ${JSON.stringify(c.text)} gives [${ids.join(', ')}], the reference [${c.ids.join(', ')}]`;
    }
  }
  for (const c of check.decode ?? []) {
    const stream = tokenizer.createAnswerStream();
    const text = c.ids.map((id) => stream.push(id)).join('') + stream.flush();
    if (text !== c.text) return `decoding [${c.ids.join(', ')}] gives ${JSON.stringify(text)}, the reference ${JSON.stringify(c.text)}`;
  }
  return null;
}
