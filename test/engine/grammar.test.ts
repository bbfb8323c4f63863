// The grammar module alone: what each constraint compiles to, the compiled-grammar cache
// (bounded, least recently used out, one compile for concurrent requests, errors not kept),
// the token masks it applies, and failures that surface as errors of the one sequence.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { EngineError } from '../../src/engine/errors.js';
import { GrammarConstraint, grammarSource, Grammars } from '../../src/engine/grammar.js';
import type { GrammarMatcher } from '../../src/engine/grammar-native.js';
import type { OutputConstraint } from '../../src/engine/types.js';
import { packageDir } from '../support/golden.js';

const dir = packageDir('tiny-random-qwen2-siglip');
const vocabulary = { tokenizerPath: join(dir, 'tokenizer.json'), logitRows: 800, stopTokenIds: [797] };
const regex = (pattern: string): OutputConstraint => ({ type: 'regex', pattern, param: 'guided_regex' });

describe('grammarSource', () => {
  test('JSON schemas compile without free whitespace unless their x-guidance says otherwise', () => {
    const plain = grammarSource({ type: 'json_schema', schema: { type: 'object' }, param: 'p' });
    assert.deepEqual(JSON.parse(plain.source), { type: 'object', 'x-guidance': { whitespace_flexible: false } });
    const own = grammarSource({ type: 'json_schema', schema: { type: 'object', 'x-guidance': { whitespace_flexible: true, lenient: true } }, param: 'p' });
    assert.deepEqual(JSON.parse(own.source)['x-guidance'], { whitespace_flexible: true, lenient: true });
    assert.deepEqual(JSON.parse(grammarSource({ type: 'json_schema', schema: true, param: 'p' }).source), { 'x-guidance': { whitespace_flexible: false } });
    assert.throws(() => grammarSource({ type: 'json_schema', schema: [1], param: 'guided_json' }), (e: unknown) => e instanceof EngineError && e.param === 'guided_json');
  });

  test('choices become Lark string literals, every character escaped as it must be', () => {
    const { kind, source } = grammarSource({ type: 'choice', choices: ['a"b', 'c\\d', 'e\nf', 'g\x7fh', ''], param: 'p' });
    assert.equal(kind, 'lark');
    assert.equal(source, 'start: "a\\"b" | "c\\\\d" | "e\\nf" | "g\\u007fh" | ""\n');
  });
});

describe('Grammars', () => {
  test('one compile for concurrent requests of the same grammar; the cache is bounded, least recently used out', async () => {
    const g = new Grammars(vocabulary, 2);
    const [a, b] = await Promise.all([g.compile(regex('a+')), g.compile(regex('a+'))]);
    assert.equal(a, b);
    assert.equal(g.cachedGrammars, 1);
    await g.compile(regex('b+'));
    await g.compile(regex('a+')); // a+ is now the most recently used
    await g.compile(regex('c+')); // evicts b+
    assert.equal(g.cachedGrammars, 2);
    assert.equal(await g.compile(regex('a+')), a);
    assert.notEqual(await g.compile(regex('b+')), undefined);
    assert.equal(g.cachedGrammars, 2);
  });

  test('a grammar that does not compile is refused each time, and not cached', async () => {
    const g = new Grammars(vocabulary);
    for (let i = 0; i < 2; i++) {
      await assert.rejects(g.compile(regex('(unclosed')), (e: unknown) => e instanceof EngineError && e.code === 'invalid_request' && e.param === 'guided_regex');
    }
    assert.equal(g.cachedGrammars, 0);
  });

  test('a model whose tokenizer cannot be read refuses constrained requests, with the reason', async () => {
    const g = new Grammars({ ...vocabulary, tokenizerPath: join(dir, 'manifest.json') });
    await assert.rejects(g.compile(regex('a')), (e: unknown) => e instanceof EngineError && /structured outputs are not available for this model/.test(e.message));
  });

  test('masks: only what the grammar allows, stop tokens only where it accepts (never with allowStop false)', async () => {
    const g = new Grammars(vocabulary);
    const c = await g.constraint({ type: 'choice', choices: ['yes', 'yesterday'], param: 'guided_choice' }, { allowStop: true });
    await c.ready;
    const row = new Float32Array(800).fill(1);
    c.apply(row);
    assert.equal(row[797], -Infinity, 'nothing generated yet: no stop');
    const allowed = [...row.keys()].filter((i) => row[i] === 1);
    assert.ok(allowed.length >= 1);
    // walk "yes" with single-letter tokens where the tokenizer has them: EOS becomes allowed
    const tok = JSON.parse((await import('node:fs')).readFileSync(vocabulary.tokenizerPath, 'utf8')).model.vocab as Record<string, number>;
    for (const ch of ['y', 'e', 's']) {
      assert.equal(c.advance(tok[ch]), false);
      await c.ready;
    }
    const after = new Float32Array(800).fill(1);
    c.apply(after);
    assert.equal(after[797], 1, '"yes" is complete: the stop token is allowed');
    assert.equal(after[tok.t], 1, '"yesterday" goes on');

    const noStop = await g.constraint({ type: 'choice', choices: ['yes', 'yesterday'], param: 'guided_choice' }, { allowStop: false });
    for (const ch of ['y', 'e', 's']) {
      await noStop.ready;
      noStop.advance(tok[ch]);
    }
    await noStop.ready;
    const masked = new Float32Array(800).fill(1);
    noStop.apply(masked);
    assert.equal(masked[797], -Infinity);
  });

  test('rows past the tokenizer are never allowed', async () => {
    const g = new Grammars({ ...vocabulary, logitRows: 1024 });
    const c = await g.constraint({ type: 'json_schema', schema: { type: 'object' }, param: 'p' }, { allowStop: true });
    await c.ready;
    const row = new Float32Array(1024).fill(1);
    c.apply(row);
    for (let id = 800; id < 1024; id++) assert.equal(row[id], -Infinity);
  });
});

describe('GrammarConstraint failures', () => {
  const failing = (failMask: boolean): GrammarMatcher => ({
    computeMask: () => (failMask ? Promise.reject(new Error('parser limit reached')) : Promise.resolve(0)),
    consume: () => {
      throw new Error('token not allowed');
    },
    applyMask: () => 1,
    isAccepting: () => false,
    stopped: false,
  });

  test('a mask that fails to compute becomes an error naming the field, when the row is masked', async () => {
    const c = new GrammarConstraint(failing(true), 'guided_grammar', true);
    await c.ready; // never rejects
    assert.throws(() => c.apply(new Float32Array(4)), (e: unknown) => e instanceof EngineError && e.param === 'guided_grammar' && /parser limit reached/.test(e.message));
  });

  test('a token the matcher refuses fails the constraint', async () => {
    const c = new GrammarConstraint(failing(false), 'guided_regex', true);
    await c.ready;
    assert.throws(() => c.advance(3), (e: unknown) => e instanceof EngineError && /after 1 tokens: token not allowed/.test(e.message));
    assert.ok(c.error);
  });
});
