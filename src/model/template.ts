// Chat messages -> the prompt string, with the manifest's prompt fields, following
// TinyLLaVA_Factory's templates (docs/model-package.md, "Rendering a prompt"):
//
//   system_format({system})
//   + for each user/assistant pair: user_format({content}=question)
//       + assistant_format({content}=answer, {eos}) if answered, else generation_prompt
//
// A user message with images becomes: its text with every placeholder removed and stripped,
// then image_format({content}) applied once per image, each result stripped, so that
// "What are these?" with one image reads "<image>\nWhat are these?".
//
// Choices beyond the reference (which knows one system prompt and one image per question):
// - System messages, wherever they are, replace the default system message (joined by "\n").
// - After them, messages must alternate user, assistant, user, ... and end with a user message.
// - Several text parts of one message are joined by "\n". Images may only appear in user messages.
// - The placeholder string is removed from all message text, images or not, so that text can
//   never create an image position of its own.

import { PromptError } from './errors.js';
import type { PromptConfig } from './manifest-types.js';

/** One message part: text, or an image (its pixels travel separately, in order). */
export type PromptPart = { type: 'text'; text: string } | { type: 'image' };

export interface PromptMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | readonly PromptPart[];
}

export interface RenderedPrompt {
  text: string;
  /** Images in prompt order: image k is the k-th image part across all messages. */
  imageCount: number;
}

export interface RenderOptions {
  /**
   * End with the generation prompt (default true: what a chat completion feeds the model, so the
   * last message must be the user's). false (vLLM's add_generation_prompt false, for /tokenize):
   * the conversation as it stands, which may end with an answer.
   */
  generationPrompt?: boolean;
}

export function renderPrompt(messages: readonly PromptMessage[], prompt: PromptConfig, options: RenderOptions = {}): RenderedPrompt {
  const generationPrompt = options.generationPrompt ?? true;
  const clean = (text: string) => text.split(prompt.image_placeholder).join('');
  const systemTexts: string[] = [];
  const turns: { role: 'user' | 'assistant'; text: string; images: number; index: number }[] = [];

  messages.forEach((message, index) => {
    const { text, images } = flattenContent(message, index);
    if (message.role === 'system') {
      if (images > 0) throw new PromptError('invalid_messages', `messages[${index}]: a system message cannot hold images`);
      systemTexts.push(clean(text));
      return;
    }
    if (message.role !== 'user' && message.role !== 'assistant') {
      throw new PromptError('invalid_messages', `messages[${index}]: unknown role ${JSON.stringify(message.role)}`);
    }
    if (message.role === 'assistant' && images > 0) {
      throw new PromptError('invalid_messages', `messages[${index}]: an assistant message cannot hold images`);
    }
    const expected = turns.length % 2 === 0 ? 'user' : 'assistant';
    if (message.role !== expected) {
      throw new PromptError(
        'invalid_messages',
        `messages[${index}]: expected ${expected === 'user' ? 'a user' : 'an assistant'} message (after system messages, user and assistant must alternate, starting with user), got ${message.role}`,
      );
    }
    turns.push({ role: message.role, text: clean(text), images, index });
  });
  if (turns.length === 0 || (generationPrompt && turns[turns.length - 1].role !== 'user')) {
    throw new PromptError('invalid_messages', 'the last message must be a user message');
  }

  const eos = prompt.eos_text;
  const system = systemTexts.length > 0 ? systemTexts.join('\n') : prompt.system_message;
  let text = fillSlots(prompt.system_format, { system, eos });
  let imageCount = 0;
  for (let i = 0; i < turns.length; i += 2) {
    const user = turns[i];
    let question = user.text;
    if (user.images > 0) {
      question = pythonStrip(question);
      for (let k = 0; k < user.images; k++) {
        question = pythonStrip(fillSlots(prompt.image_format, { content: question, eos }));
      }
      imageCount += user.images;
    }
    text += fillSlots(prompt.user_format, { content: question, eos });
    const answer = turns[i + 1];
    if (answer) text += fillSlots(prompt.assistant_format, { content: answer.text, eos });
    else if (generationPrompt) text += prompt.generation_prompt;
  }
  return { text, imageCount };
}

/** A message's text parts joined by "\n", and its number of images. */
function flattenContent(message: PromptMessage, index: number): { text: string; images: number } {
  if (typeof message.content === 'string') return { text: message.content, images: 0 };
  if (!Array.isArray(message.content)) {
    throw new PromptError('invalid_messages', `messages[${index}].content must be a string or a list of parts`);
  }
  const texts: string[] = [];
  let images = 0;
  message.content.forEach((part, p) => {
    if (part.type === 'text') texts.push(part.text);
    else if (part.type === 'image') images++;
    else throw new PromptError('invalid_messages', `messages[${index}].content[${p}]: unknown part type ${JSON.stringify((part as { type: unknown }).type)}`);
  });
  return { text: texts.join('\n'), images };
}

// Python's str.strip() whitespace (str.isspace), which differs from String.prototype.trim():
// it includes U+001C..U+001F and U+0085 and excludes U+FEFF.
const PY_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

/**
 * Python's str.strip(). A scan from both ends, not a regex: `\s+$` retried from every start of
 * a long run of spaces is quadratic (40,000 spaces took 2 s).
 */
export function pythonStrip(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && PY_SPACE.test(text[start])) start++;
  while (end > start && PY_SPACE.test(text[end - 1])) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

/**
 * Replaces {system}, {content} and {eos} in one pass, so that braces inside the inserted text
 * are never read as slots. Other braces stay as they are.
 */
export function fillSlots(format: string, values: { system?: string; content?: string; eos?: string }): string {
  return format.replace(/\{(system|content|eos)\}/g, (slot, name: keyof typeof values) => values[name] ?? slot);
}
