// Remote image URLs: off by default (bad-input.test.ts), and when on, fetched only from where
// the policy allows, at the address that was checked, within bytes and time, and only if the
// bytes are an image. An HTTP server on loopback, explicitly allowed by these tests, serves the
// images, the redirects and the failures; a resolver stands in for DNS where a test needs a
// name to resolve somewhere particular.

import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { ApiConfig } from '../../src/api/context.js';
import type { ResolvedAddress } from '../../src/api/remote-image.js';
import { assertError, imageBytes, imageMessage, startApp, type TestApp } from './support/harness.js';
import { FakeEngine } from './support/fake-engine.js';

const PNG = imageBytes('small-100x80.png');
const JPEG = imageBytes('photo-640x480.jpg');
const CAP = 48 * 1024; // MAX_UPLOAD_SIZE in these tests: the JPEG (43 KiB) fits, 64 KiB does not

let server: Server;
let origin: string;
let port: number;
/** Requests the image server received, by path, and the Host headers they carried. */
const seen: { path: string; host: string | undefined }[] = [];

const ROUTES: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
  '/cat.png': (_q, res) => res.writeHead(200, { 'content-type': 'image/png' }).end(PNG),
  '/cat.jpg': (_q, res) => res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(JPEG),
  '/redirect-ok': (_q, res) => res.writeHead(302, { location: '/cat.png' }).end(),
  '/redirect-to-private': (_q, res) => res.writeHead(302, { location: 'http://10.1.2.3/cat.png' }).end(),
  '/redirect-to-metadata': (_q, res) => res.writeHead(301, { location: 'http://169.254.169.254/latest/meta-data/' }).end(),
  '/redirect-to-localhost': (_q, res) => res.writeHead(307, { location: `http://localhost:${port}/cat.png` }).end(),
  '/loop': (_q, res) => res.writeHead(302, { location: '/loop' }).end(),
  '/big': (_q, res) => res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': String(64 * 1024) }).end(Buffer.concat([JPEG, JPEG]).subarray(0, 64 * 1024)),
  '/big-chunked': (_q, res) => {
    res.writeHead(200, { 'content-type': 'image/jpeg' });
    res.write(JPEG);
    res.end(JPEG);
  },
  '/slow': (_q, res) => {
    res.writeHead(200, { 'content-type': 'image/png' });
    res.write(PNG.subarray(0, 100)); // then nothing, for longer than IMAGE_FETCH_TIMEOUT
  },
  '/html': (_q, res) => res.writeHead(200, { 'content-type': 'image/png' }).end('<!doctype html><html><body>not an image</body></html>'),
  '/svg': (_q, res) => res.writeHead(200, { 'content-type': 'image/svg+xml' }).end('<svg xmlns="http://www.w3.org/2000/svg"/>'),
  '/gone': (_q, res) => res.writeHead(404).end(),
};

before(async () => {
  server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    seen.push({ path, host: req.headers.host });
    (ROUTES[path] ?? ((_q, r) => r.writeHead(404).end()))(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  origin = `http://127.0.0.1:${port}`;
});
after(() => {
  server.closeAllConnections();
  return new Promise<void>((resolve) => server.close(() => resolve()));
});

/** A resolver from a table, counting its calls; names not in the table do not resolve. */
function resolver(table: Record<string, string[] | (() => string[])>): { calls: string[]; resolve: (h: string) => Promise<ResolvedAddress[]> } {
  const calls: string[] = [];
  return {
    calls,
    resolve: async (host) => {
      calls.push(host);
      const entry = table[host];
      const list = typeof entry === 'function' ? entry() : entry;
      if (!list) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    },
  };
}

async function appWith(config: Partial<ApiConfig>, resolve?: (h: string) => Promise<ResolvedAddress[]>): Promise<{ t: TestApp; engine: FakeEngine }> {
  const engine = new FakeEngine();
  const t = await startApp({ engine, config: { maxUploadBytes: CAP, imageFetchTimeoutSeconds: 0.5, ...config }, resolve });
  return { t, engine };
}

const ask = (t: TestApp, url: string) => t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [imageMessage(url)], max_tokens: 2 } });
const PARAM = 'messages[0].content[0].image_url.url';

function fetches(metrics: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metrics.matchAll(/^tinyllava_image_fetches_total\{model_name="[^"]*",result="(\w+)"\} (\d+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

describe('remote images from an allowed host (ALLOWED_IMAGE_DOMAINS=127.0.0.1)', () => {
  let t: TestApp;
  let engine: FakeEngine;
  before(async () => ({ t, engine } = await appWith({ allowedImageDomains: ['127.0.0.1'] })));
  after(() => t.close());

  test('fetched, and the engine gets exactly those bytes; redirects on the same host are followed', async () => {
    for (const [path, bytes] of [['/cat.png', PNG], ['/cat.jpg', JPEG], ['/redirect-ok', PNG]] as const) {
      const res = await ask(t, `${origin}${path}?v=1`);
      assert.equal(res.statusCode, 200, res.body);
      const part = (engine.requests.at(-1)!.messages[0].content as { type: string; data?: Uint8Array }[])[0];
      assert.deepEqual(Buffer.from(part.data!), bytes, path);
    }
  });

  const refusals: [string, string, string, RegExp, string][] = [
    ['a redirect to a private address', '/redirect-to-private', 'image_url_not_allowed', /not one this server fetches/, 'refused'],
    ['a redirect to the metadata address', '/redirect-to-metadata', 'image_url_not_allowed', /not one this server fetches/, 'refused'],
    ['a redirect to a host not on the list', '/redirect-to-localhost', 'image_url_not_allowed', /"localhost" is not one this server fetches/, 'refused'],
    ['more than 5 redirects', '/loop', 'image_fetch_failed', /redirected more than 5 times/, 'failed'],
    ['an image over MAX_UPLOAD_SIZE (Content-Length)', '/big', 'image_fetch_failed', /larger than the limit of 49152 bytes/, 'too_large'],
    ['an image over MAX_UPLOAD_SIZE (no length given)', '/big-chunked', 'image_fetch_failed', /larger than the limit of 49152 bytes/, 'too_large'],
    ['a server slower than IMAGE_FETCH_TIMEOUT', '/slow', 'image_fetch_failed', /took longer than 0.5 s/, 'timeout'],
    ['HTML served as image/png', '/html', 'image_fetch_failed', /did not return a JPEG, PNG, WebP or GIF/, 'not_an_image'],
    ['SVG', '/svg', 'image_fetch_failed', /did not return a JPEG, PNG, WebP or GIF/, 'not_an_image'],
    ['a 404', '/gone', 'image_fetch_failed', /answered HTTP 404/, 'failed'],
  ];
  for (const [name, path, code, message, result] of refusals) {
    test(`refused: ${name} -> 400 ${code} (${result})`, async () => {
      const before = fetches((await t.app.inject('/metrics')).body);
      const error = assertError(await ask(t, `${origin}${path}`), 400, code, PARAM);
      assert.match(error.message, message);
      const after = fetches((await t.app.inject('/metrics')).body);
      assert.equal((after[result] ?? 0) - (before[result] ?? 0), 1, JSON.stringify(after));
      // the server still serves
      assert.equal((await ask(t, `${origin}/cat.png`)).statusCode, 200);
    });
  }

  test('the redirect targets were never contacted', () => {
    assert.ok(!seen.some((s) => s.host?.startsWith('localhost')), JSON.stringify(seen));
  });

  test('in multipart request forms too, and several images at once', async () => {
    const form = new FormData();
    form.append(
      'request',
      JSON.stringify({
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: `${origin}/cat.png` } }, { type: 'image_url', image_url: { url: `${origin}/cat.jpg` } }, { type: 'text', text: 'Compare.' }] }],
        max_tokens: 2,
      }),
    );
    await t.listen();
    const res = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', body: form });
    assert.equal(res.status, 200, await res.text());
    const parts = engine.requests.at(-1)!.messages[0].content as { data?: Uint8Array }[];
    assert.deepEqual(Buffer.from(parts[1].data!), JPEG);
  });

  test('a URL with credentials, or another scheme, is refused without a fetch', async () => {
    const before = seen.length;
    assertError(await ask(t, `http://user:pw@127.0.0.1:${port}/cat.png`), 400, 'image_url_not_allowed', PARAM);
    assertError(await ask(t, `ftp://127.0.0.1:${port}/cat.png`), 400, 'invalid_image_url', PARAM);
    assert.equal(seen.length, before);
  });
});

describe('remote images from any public host (ALLOW_REMOTE_IMAGES)', () => {
  test('private, loopback, link-local and metadata addresses are refused before any connection', async () => {
    const dns = resolver({
      'private.test': ['10.0.0.5'],
      'meta.test': ['169.254.169.254'],
      'mixed.test': ['93.184.216.34', '192.168.1.1'],
      'v6.test': ['fd00:ec2::254'],
      'cgnat.test': ['100.100.100.200'],
    });
    const { t } = await appWith({ allowRemoteImages: true }, dns.resolve);
    try {
      const before = seen.length;
      for (const [url, why] of [
        ['http://private.test/cat.png', /a private address/],
        ['http://meta.test/latest/meta-data/', /link-local/],
        ['https://mixed.test/cat.png', /a private address/],
        ['http://v6.test/cat.png', /a private address/],
        ['http://cgnat.test/cat.png', /carrier-grade NAT/],
        [`http://127.0.0.1:${port}/cat.png`, /a loopback address/],
        [`http://[::ffff:127.0.0.1]:${port}/cat.png`, /a loopback address/],
        [`http://2130706433:${port}/cat.png`, /a loopback address/], // 127.0.0.1, spelt as a number
        ['http://169.254.169.254/latest/meta-data/', /link-local/],
        ['http://168.63.129.16/machine', /cloud metadata/],
        [`${origin}/redirect-ok`, /a loopback address/],
      ] as const) {
        const error = assertError(await ask(t, url), 400, 'image_url_not_allowed', PARAM);
        assert.match(error.message, why, url);
        assert.doesNotMatch(error.message, /10\.0\.0\.5|192\.168|fd00/, 'resolved addresses are not told');
      }
      assert.equal(seen.length, before, 'no connection was made');
      assert.deepEqual(fetches((await t.app.inject('/metrics')).body), { refused: 11 });
    } finally {
      await t.close();
    }
  });

  test('a redirect from an allowed host to a private one is refused', async () => {
    const { t } = await appWith({ allowRemoteImages: true, allowedImageDomains: ['127.0.0.1'] });
    try {
      const error = assertError(await ask(t, `${origin}/redirect-to-private`), 400, 'image_url_not_allowed', PARAM);
      assert.match(error.message, /"10\.1\.2\.3" is a private address/);
      assertError(await ask(t, `${origin}/redirect-to-localhost`), 400, 'image_url_not_allowed', PARAM); // localhost: loopback, not on the list
    } finally {
      await t.close();
    }
  });
});

describe('the address that was checked is the one connected to (no DNS rebinding)', () => {
  test('a listed name is resolved once, and the socket goes to that address with the name as Host', async () => {
    const dns = resolver({ 'images.test': ['127.0.0.1'] });
    const { t, engine } = await appWith({ allowedImageDomains: ['images.test'] }, dns.resolve);
    try {
      const res = await ask(t, `http://images.test:${port}/cat.png`);
      assert.equal(res.statusCode, 200, res.body);
      assert.deepEqual(Buffer.from((engine.requests.at(-1)!.messages[0].content as { data?: Uint8Array }[])[0].data!), PNG);
      assert.deepEqual(dns.calls, ['images.test'], 'one resolution per fetch; the HTTP client did not look the name up again');
      assert.equal(seen.at(-1)!.host, `images.test:${port}`);
    } finally {
      await t.close();
    }
  });

  test('a name that answers public, then loopback, is never connected to loopback', async () => {
    let answers = 0;
    // 93.184.216.34 is a public address these machines cannot reach.
    const dns = resolver({ 'rebind.test': () => (answers++ === 0 ? ['93.184.216.34'] : ['127.0.0.1']) });
    const { t } = await appWith({ allowRemoteImages: true }, dns.resolve);
    try {
      const before = seen.length;
      const res = await ask(t, `http://rebind.test:${port}/cat.png`);
      assertError(res, 400, 'image_fetch_failed', PARAM); // unreachable, or too slow
      assert.equal(dns.calls.length, 1);
      assert.equal(seen.length, before, 'the loopback server was not reached');
    } finally {
      await t.close();
    }
  });
});
