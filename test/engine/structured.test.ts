// Structured outputs on the random-init fixtures, whose unconstrained answers are noise: every
// constrained answer parses and validates against its schema (ajv, not string checks), for
// each tokenizer family; constrained rows batched with unconstrained ones leave those rows'
// tokens equal to the reference; grammars that cannot finish end with `length`; unsupported
// keywords are refused naming the keyword.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { createEngine, type LoadedEngine } from '../../src/engine/engine.js';
import { EngineError } from '../../src/engine/errors.js';
import { loadGrammarTokenizer } from '../../src/engine/grammar-native.js';
import type { GenerationEvent, GenerationRequest, OutputConstraint } from '../../src/engine/types.js';
import { buildTokenByteTable } from '../../src/model/token-bytes.js';
import { caseMessages, goldenPackages, greedy, loadGolden, packageDir, request } from '../support/golden.js';

const MAIN = 'tiny-random-qwen2-siglip';
const ajv = new Ajv({ strict: false, allErrors: true });
const question = [{ role: 'user' as const, content: 'Describe the picture as JSON.' }];

const SCHEMAS: Record<string, object> = {
  object: {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 12 },
      age: { type: 'integer', minimum: 0, maximum: 120 },
      tags: { type: 'array', items: { enum: ['cat', 'dog', 'bird'] }, maxItems: 3 },
    },
    required: ['name', 'age', 'tags'],
    additionalProperties: false,
  },
  array: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 99 }, minItems: 2, maxItems: 4 },
  enum: { type: 'object', properties: { color: { enum: ['red', 'green', 'blue', 42, null] } }, required: ['color'], additionalProperties: false },
  pattern: {
    type: 'object',
    properties: { code: { type: 'string', pattern: '^[A-Z]{2}-[0-9]{3}$' }, date: { type: 'string', pattern: '^20[0-9]{2}-[01][0-9]-[0-3][0-9]$' } },
    required: ['code', 'date'],
    additionalProperties: false,
  },
  'number range': {
    type: 'object',
    properties: {
      x: { type: 'number', minimum: -1.5, maximum: 2.5, multipleOf: 0.25 },
      n: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 10 },
      big: { type: 'integer', minimum: 1000, maximum: 1999 },
    },
    required: ['x', 'n', 'big'],
    additionalProperties: false,
  },
  'nested, $ref and anyOf': {
    $defs: { city: { type: 'string', maxLength: 8 } },
    type: 'object',
    properties: {
      person: {
        type: 'object',
        properties: { name: { type: 'string', maxLength: 8 }, address: { type: 'object', properties: { city: { $ref: '#/$defs/city' } }, required: ['city'], additionalProperties: false } },
        required: ['name', 'address'],
        additionalProperties: false,
      },
      items: {
        type: 'array',
        maxItems: 2,
        items: { type: 'object', properties: { id: { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, { type: 'boolean' }] } }, required: ['id'], additionalProperties: false },
      },
    },
    required: ['person', 'items'],
    additionalProperties: false,
  },
  'required and optional': {
    type: 'object',
    properties: { a: { type: 'boolean' }, b: { type: 'string', maxLength: 4 }, c: { type: 'null' } },
    required: ['a'],
    additionalProperties: false,
  },
};

interface Outcome {
  ids: number[];
  text: string;
  done: Extract<GenerationEvent, { type: 'done' }>;
}

async function collect(engine: LoadedEngine, req: GenerationRequest): Promise<Outcome> {
  let text = '';
  const ids: number[] = [];
  let done: Outcome['done'] | undefined;
  for await (const e of engine.generate(req)) {
    if (e.type === 'delta') {
      text += e.text;
      ids.push(...e.tokenIds);
    } else done = e;
  }
  assert.ok(done);
  return { ids, text, done };
}

function constrained(constraint: Omit<OutputConstraint, 'param'> | OutputConstraint, overrides: Partial<GenerationRequest> = {}): GenerationRequest {
  return request(question, { maxTokens: 200, ignoreEos: false, constraint: { param: 'test', ...constraint } as OutputConstraint, ...overrides });
}

const seeded = (seed: number): GenerationRequest['sampling'] => ({ ...greedy, temperature: 1, seed });

function assertValid(schema: object, text: string, label: string): void {
  let value: unknown;
  assert.doesNotThrow(() => (value = JSON.parse(text)), `${label}: not JSON: ${text}`);
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${label}: ${text} does not validate: ${ajv.errorsText(validate.errors)}`);
}

describe(`structured outputs on ${MAIN}`, () => {
  let engine: LoadedEngine;
  before(async () => {
    engine = await createEngine(packageDir(MAIN), { warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1 });
    await engine.ready();
  });
  after(() => engine?.close());

  for (const [name, schema] of Object.entries(SCHEMAS)) {
    test(`${name} schema: greedy and sampled answers validate`, async () => {
      for (const sampling of [greedy, seeded(1), seeded(2)]) {
        const o = await collect(engine, constrained({ type: 'json_schema', schema }, { sampling }));
        const label = `${name}, temperature ${sampling.temperature}`;
        assert.equal(o.done.finishReason, 'stop', `${label}: ${o.text}`);
        assertValid(schema, o.text, label);
      }
    });
  }

  test('json_object: answers that end are JSON objects; one cut by max_tokens ends with length', async () => {
    let ended = 0;
    for (let seed = 1; seed <= 8; seed++) {
      const o = await collect(engine, constrained({ type: 'json_schema', schema: { type: 'object' } }, { sampling: seeded(seed), maxTokens: 300 }));
      if (o.done.finishReason !== 'stop') continue;
      ended++;
      const value = JSON.parse(o.text);
      assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value), o.text);
    }
    assert.ok(ended >= 2, `only ${ended} of 8 sampled JSON objects ended within 300 tokens`);
    const cut = await collect(engine, constrained({ type: 'json_schema', schema: { type: 'object' } }, { maxTokens: 3 }));
    assert.equal(cut.done.finishReason, 'length');
    assert.equal(cut.done.usage.completionTokens, 3);
    assert.ok(cut.text.startsWith('{'), cut.text);
  });

  test('regex: the whole answer matches', async () => {
    const pattern = '[a-z]{3,8}@[a-z]{2,6}\\.(com|org)';
    for (const sampling of [greedy, seeded(3)]) {
      const o = await collect(engine, constrained({ type: 'regex', pattern }, { sampling }));
      assert.equal(o.done.finishReason, 'stop');
      assert.match(o.text, new RegExp(`^${pattern}$`));
    }
  });

  test('choice: exactly one of the strings, quotes and newlines included', async () => {
    const choices = ['yes', 'no', 'it says "maybe"\nor not', 'ünïcode 🐈'];
    const seen = new Set<string>();
    for (const sampling of [greedy, seeded(1), seeded(2), seeded(3), seeded(4)]) {
      const o = await collect(engine, constrained({ type: 'choice', choices }, { sampling }));
      assert.equal(o.done.finishReason, 'stop');
      assert.ok(choices.includes(o.text), JSON.stringify(o.text));
      seen.add(o.text);
    }
    assert.ok(seen.size >= 2, 'sampling picks among the choices');
  });

  test('a Lark grammar', async () => {
    const grammar = 'start: "(" num ("," num)* ")"\nnum: /[0-9]{1,3}/\n';
    for (const sampling of [greedy, seeded(5)]) {
      const o = await collect(engine, constrained({ type: 'grammar', grammar }, { sampling, maxTokens: 100 }));
      assert.equal(o.done.finishReason, 'stop');
      assert.match(o.text, /^\([0-9]{1,3}(,[0-9]{1,3})*\)$/);
    }
  });

  test('a grammar that cannot finish within max_tokens ends with length', async () => {
    const o = await collect(engine, constrained({ type: 'regex', pattern: 'a{50}' }, { maxTokens: 5 }));
    assert.equal(o.done.finishReason, 'length');
    assert.equal(o.done.usage.completionTokens, 5);
    assert.match(o.text, /^a+$/);
  });

  test('ignore_eos: the answer goes on while the grammar allows, and ends when it is complete', async () => {
    const open = await collect(engine, constrained({ type: 'regex', pattern: '[a-z]+' }, { ignoreEos: true, maxTokens: 12 }));
    assert.equal(open.done.finishReason, 'length');
    assert.equal(open.done.usage.completionTokens, 12);
    const closed = await collect(engine, constrained({ type: 'choice', choices: ['done'] }, { ignoreEos: true, maxTokens: 12 }));
    assert.equal(closed.done.finishReason, 'stop');
    assert.equal(closed.text, 'done');
  });

  test('no stop token is generated: a complete grammar ends the answer at once', async () => {
    const stop = new Set(JSON.parse(readFileSync(join(packageDir(MAIN), 'manifest.json'), 'utf8')).text.eos_token_ids as number[]);
    const o = await collect(engine, constrained({ type: 'json_schema', schema: SCHEMAS.object }));
    assert.equal(o.done.usage.completionTokens, o.ids.length);
    assert.ok(o.ids.every((id) => !stop.has(id)));
  });

  test('logprobs describe the constrained distribution', async () => {
    const events: GenerationEvent[] = [];
    const req = constrained({ type: 'choice', choices: ['alpha', 'beta'] }, { logprobs: 2 });
    for await (const e of engine.generate(req)) events.push(e);
    const first = events.find((e) => e.type === 'delta' && e.logprobs?.length)!;
    assert.ok(first.type === 'delta');
    const lp = first.logprobs![0];
    // Only tokens the grammar allows have a probability; they share all of it.
    const finite = lp.top.filter((t) => Number.isFinite(t.logprob));
    assert.ok(finite.length >= 1 && finite.length <= 2);
    assert.ok(finite.every((t) => 'alpha'.startsWith(t.token) || 'beta'.startsWith(t.token)), JSON.stringify(lp.top));
  });

  test('constrained rows batched with unconstrained rows: those keep their reference tokens, these their solo answers', async () => {
    const golden = loadGolden(MAIN);
    const plain = golden.cases.slice(0, 3);
    const schemaNames = ['object', 'nested, $ref and anyOf', 'number range'];
    const solo: Outcome[] = [];
    for (const n of schemaNames) solo.push(await collect(engine, constrained({ type: 'json_schema', schema: SCHEMAS[n] })));
    const before = engine.stats().steps;
    const together = await Promise.all([
      ...plain.map((c) => collect(engine, request(caseMessages(c)))),
      ...schemaNames.map((n) => collect(engine, constrained({ type: 'json_schema', schema: SCHEMAS[n] }))),
      collect(engine, constrained({ type: 'regex', pattern: '[0-9]{20}' }, { maxTokens: 40 })),
    ]);
    const after = engine.stats().steps;
    assert.ok(after.decodeRows - before.decodeRows > 1.5 * (after.decodeSteps - before.decodeSteps), 'the requests shared decode steps');
    plain.forEach((c, i) => assert.deepEqual(together[i].ids, c.greedy_ids, `${c.name} batched with constrained rows`));
    schemaNames.forEach((n, i) => {
      const o = together[plain.length + i];
      assert.deepEqual(o.ids, solo[i].ids, `${n}: batched = solo`);
      assertValid(SCHEMAS[n], o.text, `${n} (batched)`);
    });
    assert.match(together.at(-1)!.text, /^[0-9]{20}$/);
  });

  test('unsupported keywords are refused, naming the keyword and where it is', async () => {
    const cases: [object, RegExp][] = [
      [{ type: 'array', uniqueItems: true }, /unsupported JSON Schema keyword "uniqueItems" at \/$/],
      [{ type: 'object', properties: { a: { type: 'string', if: { maxLength: 3 }, then: { minLength: 1 } } } }, /keywords "if", "then" at \/properties\/a/],
      [{ type: 'object', properties: { uniqueItems: { type: 'array', items: { type: 'integer', uniqueItems: true } } } }, /"uniqueItems" at \/properties\/uniqueItems\/items/],
    ];
    for (const [schema, message] of cases) {
      await assert.rejects(
        collect(engine, constrained({ type: 'json_schema', schema, param: 'response_format.json_schema.schema' })),
        (err: unknown) =>
          err instanceof EngineError && err.code === 'invalid_request' && err.param === 'response_format.json_schema.schema' && message.test(err.message),
      );
    }
    await assert.rejects(
      collect(engine, constrained({ type: 'regex', pattern: '[a-', param: 'guided_regex' })),
      (err: unknown) => err instanceof EngineError && err.param === 'guided_regex' && /guided_regex: cannot compile the regex/.test(err.message),
    );
    await assert.rejects(
      collect(engine, constrained({ type: 'grammar', grammar: 'start: undefined_rule', param: 'guided_grammar' })),
      (err: unknown) => err instanceof EngineError && err.param === 'guided_grammar' && /Lark grammar/.test(err.message),
    );
    await assert.rejects(
      collect(engine, constrained({ type: 'json_schema', schema: false, param: 'guided_json' })),
      (err: unknown) => err instanceof EngineError && err.param === 'guided_json',
    );
    // and the engine still serves
    const o = await collect(engine, constrained({ type: 'choice', choices: ['ok'] }));
    assert.equal(o.text, 'ok');
  });
});

// Every fixture family's tokenizer: byte-level BPE (phi, qwen2, stablelm), SentencePiece with
// byte fallback (llama, gemma, llava-hf), and phi's logit rows beyond its tokenizer.
for (const name of goldenPackages()) {
  describe(`structured outputs on ${name}`, () => {
    const dir = packageDir(name);
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    let engine: LoadedEngine;
    before(async () => {
      engine = await createEngine(dir, { warmup: false, intraOpNumThreads: 1, visionIntraOpNumThreads: 1 });
      await engine.ready();
    });
    after(() => engine?.close());

    test('the token trie holds the bytes the detokenizer gives every token, and covers every logit row', async () => {
      const json = readFileSync(join(dir, 'tokenizer.json'));
      const table = buildTokenByteTable(JSON.parse(json.toString('utf8')));
      const rows: number = manifest.text.vocab_size;
      const trie = await loadGrammarTokenizer(join(dir, 'tokenizer.json'), rows, manifest.text.eos_token_ids);
      assert.equal(trie.vocabSize, Math.max(rows, table.bytes.length));
      let special = 0;
      for (let id = 0; id < trie.vocabSize; id++) {
        const bytes = trie.tokenBytes(id);
        if (bytes[0] === 0xff) {
          special++;
          continue; // special tokens and rows past the tokenizer: never allowed by a grammar
        }
        assert.deepEqual([...bytes], [...(table.bytes[id] ?? [])], `token ${id}`);
      }
      assert.ok(special >= table.specialIds.size);
    });

    test('a nested schema validates, greedy and sampled', async () => {
      const schema = SCHEMAS['nested, $ref and anyOf'];
      for (const sampling of [greedy, seeded(1)]) {
        const o = await collect(engine, constrained({ type: 'json_schema', schema }, { sampling }));
        assert.equal(o.done.finishReason, 'stop', o.text);
        assertValid(schema, o.text, name);
        assert.ok(o.ids.every((id) => id < manifest.text.vocab_size));
      }
    });
  });
}
