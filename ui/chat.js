// The chat page: a client of this server's OpenAI-compatible API and nothing else. It lists the
// model (GET /v1/models), sends the whole conversation on every turn (POST
// /v1/chat/completions, stream: true, stream_options.include_usage) with the image as a data:
// URL, reads the SSE stream with fetch and a ReadableStream, and shows each answer's time to
// first token and decode rate. Errors are the server's own envelope messages. URLs are relative,
// so that the page also works behind a proxy that serves it under a path prefix.
'use strict';

const $ = (id) => document.getElementById(id);
const el = {
  model: $('model'), settings: $('settings'), system: $('system'), temperature: $('temperature'),
  maxTokens: $('max-tokens'), apiKey: $('api-key'), log: $('log'), empty: $('empty'), error: $('error'),
  composer: $('composer'), drop: $('drop'), image: $('image'), preview: $('preview'),
  previewImg: $('preview-img'), previewName: $('preview-name'), removeImage: $('remove-image'),
  question: $('question'), send: $('send'), stop: $('stop'), clear: $('clear'),
};

const state = {
  /** The conversation as the API takes it, without the system prompt (read at each send). */
  history: [],
  /** The image for the next message: { url (a data: URL), name }, or null. */
  image: null,
  /** The served model's id, once /v1/models answered. */
  model: null,
  /** Aborts the answer in progress. */
  controller: null,
};

// ---- API --------------------------------------------------------------------------------------

/** A failed request: the server's envelope message, its HTTP status and error code. */
class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(json = false) {
  const h = json ? { 'content-type': 'application/json' } : {};
  const key = el.apiKey.value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

/** The error of a non-2xx response, from its OpenAI error envelope when it has one. */
async function responseError(res) {
  let message = `${res.status} ${res.statusText}`;
  let code = null;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) {
      message = body.error.message;
      code = body.error.code;
    }
  } catch {
    // not JSON: the status line says what there is to say
  }
  return new ApiError(message, res.status, code);
}

/** Yields the JSON payload of each SSE `data:` event until [DONE]. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data === '[DONE]') return;
      if (data) yield JSON.parse(data);
    }
  }
}

let modelRetry = null;

async function loadModel() {
  clearTimeout(modelRetry);
  try {
    const res = await fetch('v1/models', { headers: headers() });
    if (!res.ok) throw await responseError(res);
    const list = await res.json();
    state.model = list.data[0].id;
    el.model.textContent = `model: ${state.model}`;
  } catch (err) {
    state.model = null;
    if (err instanceof ApiError && err.status === 401) {
      el.model.textContent = `model: unknown (${err.message}; enter it under Settings)`;
      el.settings.open = true;
    } else {
      // 503 while the model loads, or the server is not up yet: try again shortly.
      el.model.textContent = `model: unavailable (${err.message})`;
      modelRetry = setTimeout(loadModel, 2000);
    }
  }
}

// ---- the conversation -------------------------------------------------------------------------

function addMessage(role, text, imageUrl) {
  el.empty.hidden = true;
  const article = document.createElement('article');
  article.className = `msg ${role}`;
  const who = document.createElement('h2');
  who.textContent = role === 'user' ? 'You' : 'Model';
  article.append(who);
  if (imageUrl) {
    const img = document.createElement('img');
    img.className = 'thumb';
    img.src = imageUrl;
    img.alt = 'the image sent with this message';
    article.append(img);
  }
  const body = document.createElement('p');
  body.className = 'text';
  body.textContent = text;
  article.append(body);
  el.log.append(article);
  article.scrollIntoView({ block: 'end' });
  return { article, body };
}

function showError(message) {
  el.error.textContent = message;
  el.error.hidden = false;
}

function hideError() {
  el.error.hidden = true;
  el.error.textContent = '';
}

function setBusy(busy) {
  el.send.disabled = busy;
  el.stop.disabled = !busy;
  el.composer.setAttribute('aria-busy', String(busy));
}

function numberSetting(input, name) {
  const raw = input.value.trim();
  if (raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new ApiError(`${name} must be a number`, 0, null);
  return n;
}

function requestBody() {
  const system = el.system.value.trim();
  const messages = system ? [{ role: 'system', content: system }, ...state.history] : [...state.history];
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if (state.model) body.model = state.model;
  const temperature = numberSetting(el.temperature, 'Temperature');
  if (temperature !== undefined) body.temperature = temperature;
  const maxTokens = numberSetting(el.maxTokens, 'Max tokens');
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  return body;
}

/** "first token 85 ms · 41.3 tokens/s · 24 tokens": the decode rate counts tokens after the first. */
function statsText(t) {
  const parts = [];
  if (t.first !== null) parts.push(`first token ${Math.round(t.first - t.start)} ms`);
  if (t.first !== null && t.tokens > 1 && t.end > t.first) parts.push(`${((t.tokens - 1) / ((t.end - t.first) / 1000)).toFixed(1)} tokens/s`);
  parts.push(`${t.tokens} token${t.tokens === 1 ? '' : 's'}`);
  if (t.finish === 'length') parts.push('stopped at max tokens');
  if (t.stopped) parts.push('stopped');
  return parts.join(' · ');
}

async function send(event) {
  event.preventDefault();
  if (state.controller) return;
  const text = el.question.value.trim();
  const image = state.image;
  if (!text && !image) {
    showError('Type a question or add an image first.');
    el.question.focus();
    return;
  }
  hideError();
  const content = image ? [{ type: 'image_url', image_url: { url: image.url } }, ...(text ? [{ type: 'text', text }] : [])] : text;
  const turn = { role: 'user', content };
  const history = state.history;
  history.push(turn);
  const mine = addMessage('user', text, image && image.url);
  el.question.value = '';
  setImage(null);

  const answer = addMessage('assistant', '');
  answer.article.dataset.state = 'streaming';
  answer.article.setAttribute('aria-busy', 'true');
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const t = { start: performance.now(), first: null, end: null, tokens: 0, chunks: 0, usage: null, finish: null, stopped: false };
  let reply = '';
  try {
    const res = await fetch('v1/chat/completions', { method: 'POST', headers: headers(true), body: JSON.stringify(requestBody()), signal: controller.signal });
    if (!res.ok) throw await responseError(res);
    for await (const chunk of sseEvents(res.body)) {
      // A failure after the 200: one error event, then [DONE].
      if (chunk.error) throw new ApiError(chunk.error.message, 0, chunk.error.code);
      if (chunk.usage) t.usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const delta = choice.delta && choice.delta.content;
      if (delta) {
        if (t.first === null) t.first = performance.now();
        t.chunks += 1;
        reply += delta;
        answer.body.textContent = reply;
      }
      if (choice.finish_reason) t.finish = choice.finish_reason;
    }
  } catch (err) {
    t.stopped = err.name === 'AbortError';
    if (!t.stopped || reply === '') {
      // Nothing of this turn stays: the question goes back into the box, the image too.
      undo();
      if (err instanceof ApiError && err.status === 401) el.settings.open = true;
      if (!t.stopped) showError(err instanceof ApiError ? `Error: ${err.message}` : `Could not reach the server: ${err.message}`);
      finish();
      return;
    }
  }
  t.end = performance.now();
  t.tokens = t.usage ? t.usage.completion_tokens : t.chunks;
  if (history === state.history) history.push({ role: 'assistant', content: reply });
  const stats = document.createElement('p');
  stats.className = 'stats';
  stats.textContent = statsText(t);
  answer.article.append(stats);
  answer.article.dataset.state = t.stopped ? 'stopped' : 'done';
  finish();

  function undo() {
    // Cleared meanwhile: the conversation this turn belonged to is gone already.
    if (history !== state.history) return;
    history.splice(history.indexOf(turn), 1);
    mine.article.remove();
    answer.article.remove();
    if (!history.length) el.empty.hidden = false;
    el.question.value = text;
    setImage(image);
  }

  function finish() {
    answer.article.removeAttribute('aria-busy');
    state.controller = null;
    setBusy(false);
    el.question.focus();
  }
}

function clearConversation() {
  if (state.controller) state.controller.abort();
  state.history = [];
  for (const m of el.log.querySelectorAll('.msg')) m.remove();
  el.empty.hidden = false;
  hideError();
  el.question.focus();
}

// ---- the image: a file, pasted, or dropped ----------------------------------------------------

function setImage(image) {
  state.image = image;
  el.preview.hidden = !image;
  if (image) el.previewImg.src = image.url;
  else el.previewImg.removeAttribute('src');
  el.previewImg.alt = image ? `preview of ${image.name}` : '';
  el.previewName.textContent = image ? image.name : '';
  if (!image) el.image.value = '';
}

function readImage(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    hideError();
    setImage({ url: reader.result, name: file.name || 'pasted image' });
  };
  reader.onerror = () => showError(`Could not read ${file.name}: ${reader.error && reader.error.message}`);
  reader.readAsDataURL(file);
}

el.image.addEventListener('change', () => readImage(el.image.files[0]));
el.removeImage.addEventListener('click', () => setImage(null));
el.previewImg.addEventListener('error', () => {
  if (state.image) el.previewName.textContent = `${state.image.name} (the browser cannot show this file)`;
});
document.addEventListener('paste', (event) => {
  const file = [...event.clipboardData.items].find((item) => item.kind === 'file' && item.type.startsWith('image/'));
  if (!file) return;
  event.preventDefault();
  readImage(file.getAsFile());
});
// A file dropped anywhere on the page is the image (and never opens in place of the page).
for (const type of ['dragenter', 'dragover']) {
  document.addEventListener(type, (event) => {
    event.preventDefault();
    el.drop.classList.add('dragging');
  });
}
document.addEventListener('dragleave', (event) => {
  if (!event.relatedTarget) el.drop.classList.remove('dragging');
});
document.addEventListener('drop', (event) => {
  event.preventDefault();
  el.drop.classList.remove('dragging');
  readImage(event.dataTransfer.files[0]);
});

// ---- the rest of the wiring -------------------------------------------------------------------

el.composer.addEventListener('submit', send);
// Settings apply to the next message; there is nothing to submit.
$('settings-form').addEventListener('submit', (event) => event.preventDefault());
el.question.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    el.composer.requestSubmit();
  }
});
el.stop.addEventListener('click', () => state.controller && state.controller.abort());
el.clear.addEventListener('click', clearConversation);

// The key lives for this tab only (sessionStorage), never in the page's URL.
el.apiKey.value = sessionStorage.getItem('apiKey') || '';
el.apiKey.addEventListener('change', () => {
  sessionStorage.setItem('apiKey', el.apiKey.value.trim());
  loadModel();
});

loadModel();
