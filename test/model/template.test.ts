import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PromptError } from '../../src/model/errors.js';
import type { PromptConfig } from '../../src/model/manifest-types.js';
import { fillSlots, pythonStrip, renderPrompt, type PromptMessage } from '../../src/model/template.js';
import { exampleManifest } from './helpers/manifest-fixture.js';

const SYSTEM = exampleManifest().prompt.system_message;
const phi: PromptConfig = exampleManifest().prompt;

const image = { type: 'image' } as const;
const text = (t: string) => ({ type: 'text', text: t }) as const;

function render(messages: PromptMessage[], prompt = phi) {
  return renderPrompt(messages, prompt);
}

describe('renderPrompt', () => {
  it('renders the documented single-turn example', () => {
    assert.deepEqual(render([{ role: 'user', content: [image, text('What are these?')] }]), {
      text: `${SYSTEM} USER: <image>\nWhat are these? ASSISTANT:`,
      imageCount: 1,
    });
  });

  it('puts the image first whatever the part order, and strips the text', () => {
    const out = render([{ role: 'user', content: [text('  What are these?\n'), image] }]);
    assert.equal(out.text, `${SYSTEM} USER: <image>\nWhat are these? ASSISTANT:`);
  });

  it('renders answered turns with {eos} and no space before the next USER', () => {
    const out = render([
      { role: 'user', content: [image, text('What is this?')] },
      { role: 'assistant', content: 'A cat.' },
      { role: 'user', content: 'And its colour?' },
    ]);
    assert.equal(out.text, `${SYSTEM} USER: <image>\nWhat is this? ASSISTANT: A cat.<|endoftext|>USER: And its colour? ASSISTANT:`);
  });

  it('applies image_format once per image, in order', () => {
    const out = render([{ role: 'user', content: [image, image, text('Compare them.')] }]);
    assert.deepEqual(out, { text: `${SYSTEM} USER: <image>\n<image>\nCompare them. ASSISTANT:`, imageCount: 2 });
    assert.equal(render([{ role: 'user', content: [image] }]).text, `${SYSTEM} USER: <image> ASSISTANT:`);
  });

  it('counts images across messages', () => {
    const out = render([
      { role: 'user', content: [image, text('a')] },
      { role: 'assistant', content: 'b' },
      { role: 'user', content: [text('c'), image] },
    ]);
    assert.equal(out.imageCount, 2);
    assert.equal(out.text, `${SYSTEM} USER: <image>\na ASSISTANT: b<|endoftext|>USER: <image>\nc ASSISTANT:`);
  });

  it('replaces the default system message with the request\'s', () => {
    const out = render([
      { role: 'system', content: 'Be terse.' },
      { role: 'user', content: 'Hi' },
    ]);
    assert.equal(out.text, 'Be terse. USER: Hi ASSISTANT:');
    const two = render([
      { role: 'system', content: [text('One.')] },
      { role: 'system', content: 'Two.' },
      { role: 'user', content: 'Hi' },
    ]);
    assert.equal(two.text, 'One.\nTwo. USER: Hi ASSISTANT:');
  });

  it('renders no system part when system_format has no slot (llava-hf)', () => {
    const llava: PromptConfig = { ...phi, system_format: '', user_format: 'USER: {content}\n', eos_text: '</s>' };
    assert.equal(render([{ role: 'system', content: 'ignored' }, { role: 'user', content: [image, text('Q')] }], llava).text, 'USER: <image>\nQ\nASSISTANT:');
  });

  it('keeps text-only questions as they are, and removes stray placeholders everywhere', () => {
    assert.equal(render([{ role: 'user', content: '  spaced  ' }]).text, `${SYSTEM} USER:   spaced   ASSISTANT:`);
    const out = render([
      { role: 'system', content: 'S<image>' },
      { role: 'user', content: 'look <image> here' },
      { role: 'assistant', content: '<image>ok' },
      { role: 'user', content: [text('again <image>'), image] },
    ]);
    assert.equal(out.imageCount, 1);
    assert.equal(out.text, 'S USER: look  here ASSISTANT: ok<|endoftext|>USER: <image>\nagain ASSISTANT:');
  });

  it('joins text parts with a newline', () => {
    assert.equal(render([{ role: 'user', content: [text('a'), text('b')] }]).text, `${SYSTEM} USER: a\nb ASSISTANT:`);
  });

  it('never reads slots inside message text', () => {
    assert.equal(render([{ role: 'user', content: 'say {eos} and {content}' }]).text, `${SYSTEM} USER: say {eos} and {content} ASSISTANT:`);
  });

  const invalid: [string, PromptMessage[], RegExp][] = [
    ['no messages', [], /the last message must be a user message/],
    ['a final assistant message', [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }], /last message must be a user message/],
    ['two user messages in a row', [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }], /messages\[1\]: expected an assistant message/],
    ['an assistant first', [{ role: 'assistant', content: 'a' }], /messages\[0\]: expected a user message/],
    ['an image in an assistant message', [{ role: 'user', content: 'a' }, { role: 'assistant', content: [image] }, { role: 'user', content: 'c' }], /messages\[1\]: an assistant message cannot hold images/],
    ['an image in a system message', [{ role: 'system', content: [image] }, { role: 'user', content: 'a' }], /messages\[0\]: a system message cannot hold images/],
    ['an unknown role', [{ role: 'tool', content: 'a' } as unknown as PromptMessage], /unknown role "tool"/],
    ['an unknown part', [{ role: 'user', content: [{ type: 'audio' }] } as unknown as PromptMessage], /messages\[0\]\.content\[0\]: unknown part type "audio"/],
  ];
  for (const [what, messages, message] of invalid) {
    it(`refuses ${what}`, () => {
      assert.throws(() => render(messages), (err: unknown) => err instanceof PromptError && err.code === 'invalid_messages' && message.test(err.message));
    });
  }
});

describe('fillSlots and pythonStrip', () => {
  it('fills known slots once and leaves other braces', () => {
    assert.equal(fillSlots('{system}|{content}|{eos}|{other}', { system: '{content}', content: 'c', eos: 'E' }), '{content}|c|E|{other}');
  });

  it('strips what Python\'s str.strip() strips', () => {
    assert.equal(pythonStrip('\x1c\x85 a b\u3000\t'), 'a b');
    assert.equal(pythonStrip('\uFEFFa'), '\uFEFFa'); // not whitespace to Python
    assert.equal(pythonStrip(' \n\t '), '');
    assert.equal(pythonStrip('ab'), 'ab');
  });

  // The regex it replaced retried `\s+$` from every start in a run: 40,000 spaces took 2 s,
  // these 4 million would take hours. The timeout only keeps a regression from hanging the suite.
  it('strips in one pass: a long run of inner spaces is linear', { timeout: 60_000 }, () => {
    const inner = ' '.repeat(4_000_000);
    assert.equal(pythonStrip(`  a${inner}b \n`), `a${inner}b`);
  });
});

describe('renderPrompt without the generation prompt (/tokenize add_generation_prompt false)', () => {
  it('renders a conversation that ends with an answer, and a final question without ASSISTANT:', () => {
    const answered = renderPrompt([{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }], phi, { generationPrompt: false });
    assert.equal(answered.text, `${SYSTEM} USER: Hi ASSISTANT: Hello.<|endoftext|>`);
    const open = renderPrompt([{ role: 'user', content: 'Hi' }], phi, { generationPrompt: false });
    assert.equal(open.text, `${SYSTEM} USER: Hi `); // user_format ends with a space
  });
});
