// The chat page (ui/) in a real browser: Debian's chromium, headless, driven by playwright-core,
// against `npm start` on the default model. What the page shows must be what the API answers:
// each streamed answer equals the non-streamed greedy answer to the same conversation, sent
// directly, so this holds for random weights and for a trained model alike. Also: the second
// turn resends the history, each answer gets its time to first token and decode rate, the
// server's error messages reach the user, an API key typed into the page is sent as Bearer,
// the page loads nothing from elsewhere, and --no-ui takes it away. The last screen is saved
// as test/.out/chat-page.png (ignored by git, so a test run leaves the tree clean); with
// CHAT_PAGE_SCREENSHOT=docs/images/chat-page.png it refreshes the README's picture instead.
//
// Chromium comes from apt: tools/run-tests.sh (npm test) installs it when run as root.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type BrowserContext, type Page, type Request } from 'playwright-core';
import sharp from 'sharp';
import { defaultConfig } from '../../src/config.js';
import { assertError, repoRoot, startApp } from './support/harness.js';
import { startServer, type ServerProcess } from './support/server-process.js';

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = resolve(repoRoot, process.env.CHAT_PAGE_SCREENSHOT ?? 'test/.out/chat-page.png');
const SYSTEM = 'You are a helpful assistant. Answer briefly.';
// The model `npm start` serves when no --model is given.
const DEFAULT_MODEL = defaultConfig().modelDir;
const MAX_TOKENS = 24;

type Message = { role: string; content: unknown };

async function launch(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run npm test as root (tools/run-tests.sh installs it), or apt-get install --no-install-recommends chromium`);
  const profile = mkdtempSync(join(tmpdir(), 'chat-page-chromium-'));
  // launchPersistentContext passes the fresh profile as --user-data-dir.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 960, height: 900 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A picture the test draws: a red circle on blue, as PNG. */
async function picture(): Promise<Buffer> {
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="224" height="224"><rect width="224" height="224" fill="#2b6cb0"/><circle cx="112" cy="112" r="64" fill="#e53e3e"/></svg>';
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** The non-streamed greedy answer to `messages`, sent directly. */
async function direct(url: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

/** Sends what is in the composer and waits for answer number `n` (1-based) to finish. */
async function sendAndWait(page: Page, n: number, how: 'click' | 'enter' = 'click'): Promise<{ text: string; stats: string; request: Request }> {
  const posted = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/chat/completions'));
  if (how === 'click') await page.getByRole('button', { name: 'Send' }).click();
  else await page.getByLabel('Question').press('Enter');
  const request = await posted;
  const answer = page.locator('.msg.assistant').nth(n - 1);
  await answer.and(page.locator('[data-state="done"]')).waitFor({ timeout: 60_000 });
  return { text: (await answer.locator('.text').textContent())!, stats: (await answer.locator('.stats').textContent())!, request };
}

// The rate is shown only when the tokens after the first arrived over a measurable time: when the
// whole answer comes in one network read (two tokens, a fast machine), first and end are the same
// performance.now() tick and the page leaves the rate out (it flaked on CI that way).
const STATS = /^first token (\d+) ms · (?:(\d+\.\d) tokens\/s · )?(\d+) tokens?( · stopped at max tokens)?$/;

describe('the chat page in headless chromium', { timeout: 5 * 60_000 }, () => {
  let server: ServerProcess;
  let browser: Awaited<ReturnType<typeof launch>>;
  let page: Page;
  let modelId: string;
  const requests: string[] = [];
  const pageErrors: string[] = [];
  const png: { name: string; mimeType: string; buffer: Buffer } = { name: 'circle.png', mimeType: 'image/png', buffer: Buffer.alloc(0) };

  before(async () => {
    png.buffer = await picture();
    server = await startServer([], {}, { ready: true });
    modelId = ((await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] }).data[0].id;
    browser = await launch();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.on('request', (r) => requests.push(r.url()));
    page.on('pageerror', (err) => pageErrors.push(String(err)));
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test('an uploaded image and a question: the streamed answer is the greedy answer, with its timings', async () => {
    await page.goto(server.url);
    assert.equal(await page.title(), 'tinyllava-serve chat');
    await page.getByText(`model: ${modelId}`).waitFor();
    await page.getByText('Settings').click();
    await page.getByLabel('System prompt').fill(SYSTEM);
    await page.getByLabel('Temperature').fill('0');
    await page.getByLabel('Max tokens').fill(String(MAX_TOKENS));
    await page.getByLabel('Image').setInputFiles(png);
    const dataUrl = `data:image/png;base64,${png.buffer.toString('base64')}`;
    // The preview is the file as the page will send it.
    await page.locator('#preview-img[src^="data:"]').waitFor();
    assert.equal(await page.locator('#preview-img').getAttribute('src'), dataUrl);
    await page.getByLabel('Question').fill('What colour is the shape?');

    const first = await sendAndWait(page, 1);
    const user = { role: 'user', content: [{ type: 'image_url', image_url: { url: dataUrl } }, { type: 'text', text: 'What colour is the shape?' }] };
    const sent = first.request.postDataJSON() as Record<string, unknown>;
    assert.deepEqual(sent, {
      messages: [{ role: 'system', content: SYSTEM }, user],
      stream: true,
      stream_options: { include_usage: true },
      model: modelId,
      temperature: 0,
      max_tokens: MAX_TOKENS,
    });
    const expected = await direct(server.url, { model: modelId, messages: sent.messages, temperature: 0, max_tokens: MAX_TOKENS });
    assert.equal(expected.status, 200, JSON.stringify(expected.json));
    assert.ok(expected.json.choices[0].message.content.length > 0, 'a non-empty answer to compare with');
    assert.equal(first.text, expected.json.choices[0].message.content);
    const stats = STATS.exec(first.stats);
    assert.ok(stats, first.stats);
    if (stats[2] !== undefined) assert.ok(Number(stats[2]) > 0, first.stats);
    assert.equal(Number(stats[3]), expected.json.usage.completion_tokens, 'the token count is the usage the stream ended with');
    assert.equal(stats[4] !== undefined, expected.json.choices[0].finish_reason === 'length');
    // The composer is empty again, ready for the next turn.
    assert.equal(await page.getByLabel('Question').inputValue(), '');
    assert.equal(await page.locator('#preview').isHidden(), true);
  });

  test('a second turn resends the conversation and is answered as the API answers it', async () => {
    await page.getByLabel('Question').fill('What colour is the background?');
    const second = await sendAndWait(page, 2, 'enter');
    const sent = second.request.postDataJSON() as { messages: Message[] };
    const firstAnswer = (await page.locator('.msg.assistant .text').first().textContent())!;
    assert.deepEqual(
      sent.messages.map((m) => m.role),
      ['system', 'user', 'assistant', 'user'],
    );
    assert.equal(sent.messages[2].content, firstAnswer);
    assert.equal(sent.messages[3].content, 'What colour is the background?');
    assert.match(JSON.stringify(sent.messages[1].content), /data:image\/png;base64,/);
    const expected = await direct(server.url, { model: modelId, messages: sent.messages, temperature: 0, max_tokens: MAX_TOKENS });
    assert.equal(second.text, expected.json.choices[0].message.content);
    assert.match(second.stats, STATS);
    await page.locator('.msg.assistant .stats').nth(1).scrollIntoViewIfNeeded();
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  });

  test("a file that is not an image: the server's message is shown and the question kept", async () => {
    const text = { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a picture\n') };
    await page.getByLabel('Image').setInputFiles(text);
    await page.locator('#preview-img[src^="data:text/plain"]').waitFor({ state: 'attached' });
    await page.getByLabel('Question').fill('What is this?');
    await page.getByRole('button', { name: 'Send' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    const history = [
      { role: 'user', content: [{ type: 'image_url', image_url: { url: `data:text/plain;base64,${text.buffer.toString('base64')}` } }, { type: 'text', text: 'What is this?' }] },
    ];
    const expected = await direct(server.url, { messages: history });
    assert.equal(expected.status, 400);
    assert.equal(await alert.textContent(), `Error: ${expected.json.error.message}`);
    assert.equal(await page.getByLabel('Question').inputValue(), 'What is this?', 'the question is back in the box');
    assert.equal(await page.locator('.msg').count(), 4, 'the failed turn left nothing in the conversation');
    await page.getByRole('button', { name: 'Remove image' }).click();
  });

  test('Clear conversation starts afresh: the next question is sent alone', async () => {
    await page.getByRole('button', { name: 'Clear conversation' }).click();
    assert.equal(await page.locator('.msg').count(), 0);
    assert.equal(await page.getByRole('alert').isHidden(), true);
    await page.getByLabel('Question').fill('Hello');
    const answer = await sendAndWait(page, 1);
    const sent = answer.request.postDataJSON() as { messages: Message[] };
    assert.deepEqual(sent.messages, [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: 'Hello' },
    ]);
    const expected = await direct(server.url, { messages: sent.messages, temperature: 0, max_tokens: MAX_TOKENS });
    assert.equal(answer.text, expected.json.choices[0].message.content);
  });

  test('an image dropped on the composer or pasted is previewed as the data URL that is sent', async () => {
    const dataUrl = `data:image/png;base64,${png.buffer.toString('base64')}`;
    // What a drop or a paste carries: a DataTransfer holding the file, made in the page (this
    // file is compiled without the DOM's types, hence source text).
    const file = (name: string) => `(() => {
      const bytes = Uint8Array.from(atob(${JSON.stringify(png.buffer.toString('base64'))}), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], ${JSON.stringify(name)}, { type: 'image/png' }));
      return dt;
    })()`;
    await page.locator('#composer').dispatchEvent('drop', { dataTransfer: await page.evaluateHandle(file('dropped.png')) });
    await page.getByText('dropped.png').waitFor();
    assert.equal(await page.locator('#preview-img').getAttribute('src'), dataUrl);
    await page.getByRole('button', { name: 'Remove image' }).click();
    assert.equal(await page.locator('#preview').isHidden(), true);

    await page.evaluate(`document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: ${file('pasted.png')}, bubbles: true }))`);
    await page.getByText('pasted.png').waitFor();
    assert.equal(await page.locator('#preview-img').getAttribute('src'), dataUrl);
    await page.getByRole('button', { name: 'Remove image' }).click();
  });

  test("the bundled example: the default model's right answer appears on the page", async () => {
    // The default model (models/tinyllava-demo) knows its example's answers (examples.json,
    // also checked through the API by demo-accuracy.test.ts); asked from the page as a user
    // would, with the model's own default system prompt (the field left empty).
    const examples = JSON.parse(readFileSync(join(DEFAULT_MODEL, 'examples/examples.json'), 'utf8')) as { image: string; question: string; answer: string }[];
    const example = examples[0];
    await page.getByRole('button', { name: 'Clear conversation' }).click();
    await page.getByLabel('System prompt').fill('');
    await page.getByLabel('Image').setInputFiles(join(DEFAULT_MODEL, 'examples', example.image));
    await page.locator('#preview-img[src^="data:"]').waitFor();
    await page.getByLabel('Question').fill(example.question);
    const answer = await sendAndWait(page, 1);
    assert.equal(answer.text, example.answer, example.question);
    assert.equal((answer.request.postDataJSON() as { messages: Message[] }).messages.length, 1);
    await page.getByLabel('System prompt').fill(SYSTEM);
  });

  test('the page fetched nothing from anywhere but this server, and threw nothing', () => {
    const origin = new URL(server.url).origin;
    const elsewhere = requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:'));
    assert.deepEqual(elsewhere, []);
    assert.deepEqual(pageErrors, []);
  });

  test('with API keys: the page loads without one, says a key is needed, and sends the typed key as Bearer', async () => {
    const keyed = await startServer(['--api-keys', 'sk-page-test'], {}, { ready: true });
    const tab = await browser.context.newPage();
    try {
      const res = await tab.goto(keyed.url);
      assert.equal(res!.status(), 200);
      await tab.getByText(/model: unknown \(this server needs an API key/).waitFor();
      assert.equal(await tab.locator('#settings').getAttribute('open'), '', 'Settings open at the key field');
      await tab.getByLabel('API key').fill('sk-page-test');
      await tab.getByLabel('API key').press('Tab');
      await tab.getByText(`model: ${modelId}`).waitFor();
      await tab.getByLabel('Question').fill('Hello');
      const answer = await sendAndWait(tab, 1);
      assert.equal(answer.request.headers().authorization, 'Bearer sk-page-test');
      assert.match(answer.stats, STATS);
    } finally {
      await tab.close();
      await keyed.stop();
    }
  });
});

describe('serving the chat page', () => {
  test('--no-ui: GET / and the page files are the 404 envelope', async () => {
    const off = await startServer(['--no-ui']);
    try {
      for (const path of ['/', '/chat.js', '/index.html']) {
        const res = await fetch(`${off.url}${path}`);
        const body = await res.text();
        assertError({ statusCode: res.status, body, headers: Object.fromEntries(res.headers) }, 404, 'route_not_found');
      }
    } finally {
      await off.stop();
    }
  });

  test('GET and HEAD only (405 with Allow otherwise), no API key needed for the page itself, a strict CSP', async () => {
    const t = await startApp({ config: { apiKeys: ['sk-x'] } });
    try {
      for (const url of ['/', '/index.html', '/chat.js', '/chat.css']) {
        const res = await t.app.inject(url);
        assert.equal(res.statusCode, 200, url);
        assert.match(String(res.headers['content-security-policy']), /default-src 'none'.*connect-src 'self'/, url);
        assert.equal(res.headers['x-content-type-options'], 'nosniff');
        assert.equal((await t.app.inject({ method: 'HEAD', url })).statusCode, 200, `HEAD ${url}`);
      }
      assert.match(String((await t.app.inject('/')).headers['content-type']), /^text\/html/);
      assert.match(String((await t.app.inject('/chat.js')).headers['content-type']), /javascript/);
      const post = await t.app.inject({ method: 'POST', url: '/', payload: {} });
      assertError(post, 405, 'method_not_allowed');
      assert.equal(post.headers.allow, 'GET, HEAD');
      assertError(await t.app.inject('/v1/models'), 401, 'invalid_api_key');
      assertError(await t.app.inject('/chat.jsx'), 404, 'route_not_found');
      assertError(await t.app.inject('/../package.json'), 404, 'route_not_found');
    } finally {
      await t.close();
    }
  });
});
