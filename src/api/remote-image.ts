// Fetching http(s) image URLs, when the operator allows it (remote-image-policy.ts says which).
//
//   URL --policy--> host allowed? --resolve (once)--> every address allowed? --connect to THAT
//   address (the socket's lookup is pinned to it: no second DNS answer can move it, no DNS
//   rebinding)--> 3xx: check the Location like a new URL (at most MAX_REDIRECTS)
//                 200: read at most MAX_UPLOAD_SIZE bytes, refuse at once when the first bytes
//                      are not JPEG, PNG, WebP or GIF (the Content-Type header is not trusted)
//
// The whole fetch, redirects included, has IMAGE_FETCH_TIMEOUT; a client that goes away aborts
// it. Every fetch is counted by result in tinyllava_image_fetches_total. Failures are 400s whose
// param is the image's field; their messages never quote resolved addresses.

import { lookup as dnsLookup } from 'node:dns/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { performance } from 'node:perf_hooks';
import { ApiError, type ApiErrorCode } from './errors.js';
import type { ImageFetchResult } from './metrics.js';
import { addressProblem, hostVerdict, ipLiteral, type RemoteImageSettings } from './remote-image-policy.js';
import type { PendingImage } from './validation.js';

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Host name -> its addresses (the system resolver by default; tests substitute one). */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export interface RemoteImageOptions extends RemoteImageSettings {
  maxBytes: number;
  timeoutMs: number;
  maxRedirects?: number;
  resolve?: Resolver;
  /** Called once per fetch with its result and duration. */
  onFetched?: (result: ImageFetchResult, seconds: number) => void;
}

export const MAX_REDIRECTS = 5;
const SNIFF_BYTES = 12;

const systemResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

/** An ApiError that also says how the fetch ended, for the metric. */
class FetchError extends ApiError {
  constructor(
    readonly result: ImageFetchResult,
    code: ApiErrorCode,
    message: string,
    param: string,
  ) {
    super(code, message, { param });
  }
}

export class RemoteImages {
  private readonly resolve: Resolver;

  constructor(private readonly options: RemoteImageOptions) {
    this.resolve = options.resolve ?? systemResolver;
  }

  /** Whether any http(s) URL can be fetched at all. */
  get enabled(): boolean {
    return this.options.allowAny || this.options.allowedHosts.length > 0;
  }

  /** Refuses, without any network, a URL the policy never fetches (scheme, host). */
  check(url: string, param: string): void {
    this.allowedUrl(url, param);
  }

  /** Fetches every pending image of a request at once, filling in their bytes. */
  async fetchAll(pending: readonly PendingImage[], signal: AbortSignal): Promise<void> {
    // The first failure stops the others: the request is refused either way.
    const others = new AbortController();
    const both = AbortSignal.any([signal, others.signal]);
    try {
      await Promise.all(pending.map(async (p) => void (p.part.data = await this.fetch(p.url, p.param, both))));
    } finally {
      others.abort();
    }
  }

  /** The image's bytes, or a FetchError (400) naming `param`. */
  async fetch(url: string, param: string, clientSignal: AbortSignal): Promise<Uint8Array> {
    const started = performance.now();
    const deadline = AbortSignal.timeout(this.options.timeoutMs);
    const signal = AbortSignal.any([clientSignal, deadline]);
    let result: ImageFetchResult = 'failed';
    try {
      const data = await this.follow(this.allowedUrl(url, param), param, signal);
      result = 'ok';
      return data;
    } catch (err) {
      if (clientSignal.aborted) throw clientSignal.reason instanceof ApiError ? clientSignal.reason : new ApiError('cancelled', 'the client disconnected');
      if (deadline.aborted) {
        result = 'timeout';
        throw new ApiError('image_fetch_failed', `fetching the image took longer than ${this.options.timeoutMs / 1000} s (IMAGE_FETCH_TIMEOUT)`, { param });
      }
      if (err instanceof FetchError) {
        result = err.result;
        throw err;
      }
      throw new ApiError('image_fetch_failed', `fetching the image failed: ${networkReason(err)}`, { param });
    } finally {
      this.options.onFetched?.(result, (performance.now() - started) / 1000);
    }
  }

  private allowedUrl(url: string, param: string): URL {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new FetchError('refused', 'invalid_image_url', 'the image URL is not a valid URL', param);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new FetchError('refused', 'image_url_not_allowed', 'only http(s) image URLs are fetched', param);
    }
    if (parsed.username || parsed.password) {
      throw new FetchError('refused', 'image_url_not_allowed', 'image URLs with credentials (user:password@) are not fetched', param);
    }
    const verdict = hostVerdict(this.options, parsed.hostname);
    if (!verdict.allowed) throw new FetchError('refused', 'image_url_not_allowed', verdict.reason, param);
    return parsed;
  }

  private async follow(url: URL, param: string, signal: AbortSignal): Promise<Uint8Array> {
    const maxRedirects = this.options.maxRedirects ?? MAX_REDIRECTS;
    for (let redirects = 0; ; redirects++) {
      const target = await this.address(url, param, signal);
      const res = await get(url, target, signal);
      const location = res.headers.location;
      if (res.statusCode !== undefined && res.statusCode >= 300 && res.statusCode < 400 && location) {
        res.destroy();
        if (redirects >= maxRedirects) throw new FetchError('failed', 'image_fetch_failed', `the image URL redirected more than ${maxRedirects} times`, param);
        let next: URL;
        try {
          next = new URL(location, url);
        } catch {
          throw new FetchError('failed', 'image_fetch_failed', 'the image URL redirected to an invalid URL', param);
        }
        // Every hop is checked as if the client had sent it.
        url = this.allowedUrl(next.href, param);
        continue;
      }
      if (res.statusCode !== 200) {
        res.destroy();
        throw new FetchError('failed', 'image_fetch_failed', `the image URL answered HTTP ${res.statusCode}`, param);
      }
      return readImage(res, this.options.maxBytes, param);
    }
  }

  /** The one address to connect to, after the policy looked at every address the host has. */
  private async address(url: URL, param: string, signal: AbortSignal): Promise<ResolvedAddress> {
    const literal = ipLiteral(url.hostname);
    let addresses: ResolvedAddress[];
    if (literal !== null) addresses = [{ address: literal, family: literal.includes(':') ? 6 : 4 }];
    else {
      try {
        addresses = await abortable(this.resolve(url.hostname), signal);
      } catch (err) {
        if (signal.aborted) throw err;
        throw new FetchError('failed', 'image_fetch_failed', `the image URL's host ${JSON.stringify(url.hostname)} does not resolve`, param);
      }
    }
    if (addresses.length === 0) throw new FetchError('failed', 'image_fetch_failed', `the image URL's host ${JSON.stringify(url.hostname)} does not resolve`, param);
    const verdict = hostVerdict(this.options, url.hostname);
    if (!(verdict.allowed && verdict.anyAddress)) {
      for (const a of addresses) {
        const problem = addressProblem(a.address);
        if (problem !== null) {
          throw new FetchError(
            'refused',
            'image_url_not_allowed',
            `the image URL's host ${JSON.stringify(url.hostname)} is ${problem}; only hosts with public addresses (or those of ALLOWED_IMAGE_DOMAINS) are fetched`,
            param,
          );
        }
      }
    }
    return addresses[0];
  }
}

/** One GET to `url`, connected to `target` whatever DNS would say now. */
function get(url: URL, target: ResolvedAddress, signal: AbortSignal): Promise<IncomingMessage> {
  const pinned: LookupFunction = (_hostname, options, callback) => {
    if ((options as { all?: boolean }).all) (callback as (e: null, a: ResolvedAddress[]) => void)(null, [target]);
    else callback(null, target.address, target.family);
  };
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(
      {
        protocol: url.protocol,
        // A name stays the name (Host header, TLS server name and certificate check); the socket goes to `target`.
        hostname: ipLiteral(url.hostname) ?? url.hostname,
        port: url.port || undefined,
        path: `${url.pathname}${url.search}`,
        method: 'GET',
        headers: { accept: 'image/*', 'accept-encoding': 'identity', 'user-agent': 'tinyllava-serve' },
        agent: false,
        lookup: pinned,
        signal,
      },
      resolve,
    );
    req.once('error', reject);
    req.end();
  });
}

/** The body, at most `maxBytes`, refused as soon as its first bytes are not an image. */
async function readImage(res: IncomingMessage, maxBytes: number, param: string): Promise<Uint8Array> {
  const tooLarge = (): FetchError =>
    new FetchError('too_large', 'image_fetch_failed', `the image is larger than the limit of ${maxBytes} bytes (MAX_UPLOAD_SIZE)`, param);
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    res.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let total = 0;
  let sniffed = false;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      total += chunk.length;
      if (total > maxBytes) throw tooLarge();
      if (!sniffed && total >= SNIFF_BYTES) {
        if (!looksLikeImage(Buffer.concat(chunks))) throw notAnImage(param);
        sniffed = true;
      }
    }
  } finally {
    res.destroy();
  }
  const data = Buffer.concat(chunks);
  if (!sniffed && !looksLikeImage(data)) throw notAnImage(param);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function notAnImage(param: string): FetchError {
  return new FetchError('not_an_image', 'image_fetch_failed', 'the image URL did not return a JPEG, PNG, WebP or GIF image', param);
}

/** Magic numbers of the formats the model decodes. */
export function looksLikeImage(b: Uint8Array): boolean {
  const ascii = (at: number, s: string): boolean => b.length >= at + s.length && [...s].every((c, i) => b[at + i] === c.charCodeAt(0));
  return (
    (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) ||
    (b.length >= 8 && b[0] === 0x89 && ascii(1, 'PNG\r\n\x1a\n')) ||
    ascii(0, 'GIF87a') ||
    ascii(0, 'GIF89a') ||
    (ascii(0, 'RIFF') && ascii(8, 'WEBP'))
  );
}

function networkReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ECONNREFUSED') return 'the connection was refused';
  if (code === 'ECONNRESET') return 'the connection was reset';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'the host does not resolve';
  if (typeof code === 'string' && (code.startsWith('ERR_TLS') || code.includes('CERT'))) return `TLS failed (${code})`;
  return typeof code === 'string' ? code : 'a network error';
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
