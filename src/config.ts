// Every server setting in one table: key, default, environment variable, command-line flag,
// description and parser. `loadConfig` resolves flag > environment > default and fails fast
// with a message naming the setting; the README's settings table is rendered from this table
// (`settingsMarkdown`, checked by test/api/config.test.ts) so that the two cannot drift.

import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export interface Config {
  modelDir: string;
  servedModelName: string | null;
  host: string;
  port: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  logFormat: 'auto' | 'json' | 'pretty';
  apiKeys: string[];
  allowedOrigins: string[];
  bodyLimitBytes: number;
  maxUploadBytes: number;
  maxImages: number;
  maxImagePixels: number;
  allowRemoteImages: boolean;
  allowedImageDomains: string[];
  imageFetchTimeoutSeconds: number;
  requestTimeoutSeconds: number;
  headersTimeoutSeconds: number;
  bodyTimeoutSeconds: number;
  keepAliveTimeoutSeconds: number;
  shutdownDelaySeconds: number;
  drainTimeoutSeconds: number;
  retryAfterSeconds: number;
  runtime: 'native' | 'js';
  executionProvider: 'cpu' | 'cuda';
  cudaFallbackToCpu: boolean;
  cudaDir: string;
  deviceId: number;
  intraOpThreads: number | null;
  visionIntraOpThreads: number | null;
  separateVisionWorker: boolean;
  kvCacheBytes: number | null;
  maxBatchSize: number;
  maxWaiting: number;
  prefillChunkTokens: number;
  imageCacheBytes: number;
  prefixCacheBytes: number | null;
  warmup: boolean;
  ui: boolean;
}

interface Setting<T> {
  env: string;
  flag: string;
  default: T;
  /** How the default reads in --help and the README, when not simply the value. */
  defaultText?: string;
  description: string;
  /** Turns the raw text into the value, or throws an Error whose message says what is expected. */
  parse(raw: string): T;
}

/** Thrown for any unusable setting; the message names the setting, where it came from and the value. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

// ---- parsers: each throws with what it expected; loadConfig adds the setting's name ----

function integer(min: number, max = Number.MAX_SAFE_INTEGER): (raw: string) => number {
  return (raw) => {
    const n = /^[+-]?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new Error(`must be an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}`);
    }
    return n;
  };
}

function seconds(raw: string): number {
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error('must be a number of seconds >= 0');
  return n;
}

function positiveSeconds(raw: string): number {
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error('must be a number of seconds > 0');
  return n;
}

function boolean(raw: string): boolean {
  const v = raw.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new Error('must be true or false');
}

function oneOf<T extends string>(...values: T[]): (raw: string) => T {
  return (raw) => {
    if (!(values as string[]).includes(raw)) throw new Error(`must be one of ${values.join(', ')}`);
    return raw as T;
  };
}

function nonEmpty(raw: string): string {
  if (raw.trim() === '') throw new Error('must not be empty');
  return raw;
}

/** A comma-separated list; empty items are dropped, each other one goes through `item`. */
function list(item: (raw: string) => string = (s) => s): (raw: string) => string[] {
  return (raw) => raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(item);
}

/** A browser origin as the Origin header carries it (`https://app.example.com`, with a port if not the default), or `*`. */
function origin(raw: string): string {
  if (raw === '*') return raw;
  let url: URL | null = null;
  try {
    url = new URL(raw);
  } catch {
    // reported below
  }
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.origin !== raw) {
    throw new Error(`must be * or origins like https://app.example.com (scheme, host and port only), not ${JSON.stringify(raw)}`);
  }
  return raw;
}

/** A host name or IP address as a URL spells it (lower case, IPv6 in brackets), without port or path. */
function hostName(raw: string): string {
  const name = raw.toLowerCase().replace(/\.$/, '');
  let parsed: string | null = null;
  try {
    parsed = new URL(`http://${name}/`).hostname;
  } catch {
    // reported below
  }
  if (parsed !== name) throw new Error(`must be host names like images.example.com or IP addresses, not ${JSON.stringify(raw)}`);
  return name;
}

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, kb: 2 ** 10, kib: 2 ** 10, m: 2 ** 20, mb: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gb: 2 ** 30, gib: 2 ** 30 };

/** A byte count: a whole number with an optional binary unit (32MB = 32 MiB). */
function bytes(min: number): (raw: string) => number {
  return (raw) => {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(raw);
    const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
    const n = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`must be a size of at least ${min} bytes, e.g. 1048576, 512KB, 32MB, 2GB`);
    return n;
  };
}

/** `auto` (or empty) for "let the engine decide", else the inner parser. */
function auto<T>(inner: (raw: string) => T): (raw: string) => T | null {
  return (raw) => (raw.trim() === '' || raw.trim().toLowerCase() === 'auto' ? null : inner(raw));
}

// The repository root, so that the bundled model is found whatever the working directory.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export const SETTINGS: { readonly [K in keyof Config]: Setting<Config[K]> } = {
  modelDir: {
    env: 'MODEL_DIR',
    flag: 'model',
    default: resolve(repoRoot, 'models/tinyllava-demo'),
    defaultText: 'models/tinyllava-demo',
    description: 'Model package directory (made by `npm run export`).',
    parse: (raw) => resolve(nonEmpty(raw)),
  },
  servedModelName: {
    env: 'SERVED_MODEL_NAME',
    flag: 'served-model-name',
    default: null,
    defaultText: "the package's name",
    description: 'The model id clients send as `model` and /v1/models lists.',
    parse: nonEmpty,
  },
  host: {
    env: 'HOST',
    flag: 'host',
    default: '127.0.0.1',
    description: 'Address to listen on (0.0.0.0 for every interface).',
    parse: nonEmpty,
  },
  port: {
    env: 'PORT',
    flag: 'port',
    default: 8000,
    description: 'TCP port to listen on (0 picks a free one).',
    parse: integer(0, 65535),
  },
  logLevel: {
    env: 'LOG_LEVEL',
    flag: 'log-level',
    default: 'info',
    description: 'fatal, error, warn, info, debug, trace or silent. Logs are JSON lines on stdout.',
    parse: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'),
  },
  logFormat: {
    env: 'LOG_FORMAT',
    flag: 'log-format',
    default: 'auto',
    defaultText: 'auto (pretty on a terminal, else json)',
    description: 'json (one JSON object per line, for log collectors) or pretty (coloured, readable lines). No format ever logs request bodies, prompts, images or keys.',
    parse: oneOf('auto', 'json', 'pretty'),
  },
  apiKeys: {
    env: 'API_KEYS',
    flag: 'api-keys',
    default: [],
    defaultText: 'none (no authentication)',
    description: 'Comma-separated keys; when set, /v1/* needs `Authorization: Bearer <key>`.',
    parse: list(),
  },
  allowedOrigins: {
    env: 'ALLOWED_ORIGINS',
    flag: 'allowed-origins',
    default: [],
    defaultText: 'none (CORS off)',
    description: 'Comma-separated browser origins (`https://app.example.com`) allowed to call the API from a web page (CORS, preflight included); `*` allows any.',
    parse: list(origin),
  },
  bodyLimitBytes: {
    env: 'BODY_LIMIT',
    flag: 'body-limit',
    default: 32 * 2 ** 20,
    defaultText: '32MB',
    description: 'Largest request body (JSON with base64 images, or a whole multipart upload); larger ones get 413.',
    parse: bytes(1024),
  },
  maxUploadBytes: {
    env: 'MAX_UPLOAD_SIZE',
    flag: 'max-upload-size',
    default: 20 * 2 ** 20,
    defaultText: '20MB',
    description: 'Largest single image file: an uploaded file (multipart) or a fetched remote image; at most BODY_LIMIT.',
    parse: bytes(1),
  },
  maxImages: {
    env: 'MAX_IMAGES',
    flag: 'max-images',
    default: 4,
    description: 'Most images in one request (image parts plus uploads).',
    parse: integer(1, 64),
  },
  maxImagePixels: {
    env: 'MAX_IMAGE_PIXELS',
    flag: 'max-image-pixels',
    default: 40_000_000,
    description: 'Largest input image, width x height, refused from its header before decoding.',
    parse: integer(1),
  },
  allowRemoteImages: {
    env: 'ALLOW_REMOTE_IMAGES',
    flag: 'allow-remote-images',
    default: false,
    description:
      'Fetch http(s) image URLs from any host that resolves to public addresses only (never loopback, private, link-local or cloud metadata addresses); off: only the hosts of ALLOWED_IMAGE_DOMAINS.',
    parse: boolean,
  },
  allowedImageDomains: {
    env: 'ALLOWED_IMAGE_DOMAINS',
    flag: 'allowed-image-domains',
    default: [],
    defaultText: 'none',
    description:
      'Comma-separated host names (exact, no wildcards) whose http(s) image URLs are fetched, whatever address they resolve to (e.g. an internal image store).',
    parse: list(hostName),
  },
  imageFetchTimeoutSeconds: {
    env: 'IMAGE_FETCH_TIMEOUT',
    flag: 'image-fetch-timeout',
    default: 10,
    description: 'Seconds a remote image may take to fetch, redirects included.',
    parse: positiveSeconds,
  },
  requestTimeoutSeconds: {
    env: 'REQUEST_TIMEOUT',
    flag: 'request-timeout',
    default: 0,
    defaultText: '0 (none)',
    description: 'Seconds a generation may take from arrival; past it the answer ends (finish_reason length), or 503 if no token was generated yet.',
    parse: seconds,
  },
  headersTimeoutSeconds: {
    env: 'HEADERS_TIMEOUT',
    flag: 'headers-timeout',
    default: 10,
    defaultText: '10',
    description: 'Seconds a connection may take to send its request headers (also a connection that sends nothing); then 408 and closed. 0: none.',
    parse: seconds,
  },
  bodyTimeoutSeconds: {
    env: 'BODY_TIMEOUT',
    flag: 'body-timeout',
    default: 60,
    description: 'Seconds a client may take to send a whole request, headers and body; then 408 and closed. At least HEADERS_TIMEOUT. 0: none.',
    parse: seconds,
  },
  keepAliveTimeoutSeconds: {
    env: 'KEEP_ALIVE_TIMEOUT',
    flag: 'keep-alive-timeout',
    default: 5,
    description: 'Seconds an idle keep-alive connection stays open between requests; behind a proxy that keeps idle connections to the server, set it above the proxy\'s idle timeout.',
    parse: positiveSeconds,
  },
  shutdownDelaySeconds: {
    env: 'SHUTDOWN_DELAY',
    flag: 'shutdown-delay',
    default: 5,
    description:
      'On SIGTERM, seconds during which /ready answers 503 while requests are still served, so that load balancers and Kubernetes stop routing here before the drain starts (longer than the health check interval times its failure count).',
    parse: seconds,
  },
  drainTimeoutSeconds: {
    env: 'DRAIN_TIMEOUT',
    flag: 'drain-timeout',
    default: 30,
    description: 'After the shutdown delay (SIGTERM) or at once (SIGINT), seconds to let in-flight requests finish before cancelling them and exiting.',
    parse: seconds,
  },
  retryAfterSeconds: {
    env: 'RETRY_AFTER',
    flag: 'retry-after',
    default: 1,
    description: 'Retry-After (seconds) sent with 429 and 503.',
    parse: integer(0, 3600),
  },
  runtime: {
    env: 'RUNTIME',
    flag: 'runtime',
    default: 'native',
    description:
      'Which runtime runs the graphs: native (the Rust addon over the ONNX Runtime C API; the KV cache stays in native or GPU memory, only logits come back to JS) or js (onnxruntime-node, the KV cache in JS memory). native falls back to js, with a log line saying why, when its addon was not built (no cargo at install time) or cannot load.',
    parse: oneOf('native', 'js'),
  },
  executionProvider: {
    env: 'EXECUTION_PROVIDER',
    flag: 'execution-provider',
    default: 'cpu',
    description: 'ONNX Runtime execution provider: cpu or cuda.',
    parse: oneOf('cpu', 'cuda'),
  },
  cudaFallbackToCpu: {
    env: 'CUDA_FALLBACK_TO_CPU',
    flag: 'cuda-fallback-to-cpu',
    default: false,
    description: 'With cuda: run on CPU (logged) when the CUDA provider cannot load, instead of failing.',
    parse: boolean,
  },
  cudaDir: {
    env: 'CUDA_DIR',
    flag: 'cuda-dir',
    default: resolve(repoRoot, '.cuda'),
    defaultText: '.cuda',
    description: 'With cuda and the native runtime: the folder `npm run setup:cuda` installed the CUDA provider and CUDA 13 libraries into (docs/gpu.md).',
    parse: (raw) => resolve(nonEmpty(raw)),
  },
  deviceId: {
    env: 'DEVICE_ID',
    flag: 'device-id',
    default: 0,
    description: 'CUDA device index.',
    parse: integer(0, 255),
  },
  intraOpThreads: {
    env: 'INTRA_OP_THREADS',
    flag: 'intra-op-threads',
    default: null,
    defaultText: 'auto (all cores)',
    description: "ONNX Runtime intra-op threads of the decoder's worker.",
    parse: auto(integer(1, 1024)),
  },
  visionIntraOpThreads: {
    env: 'VISION_INTRA_OP_THREADS',
    flag: 'vision-intra-op-threads',
    default: null,
    defaultText: 'auto (all cores)',
    description: "ONNX Runtime intra-op threads of the vision encoder's worker.",
    parse: auto(integer(1, 1024)),
  },
  separateVisionWorker: {
    env: 'SEPARATE_VISION_WORKER',
    flag: 'separate-vision-worker',
    default: true,
    description: 'Run the vision encoder in its own worker thread, so image encoding overlaps decoding.',
    parse: boolean,
  },
  kvCacheBytes: {
    env: 'KV_CACHE_SIZE',
    flag: 'kv-cache-size',
    default: null,
    defaultText: 'auto',
    description: 'KV cache capacity (e.g. 2GB); auto: MAX_BATCH_SIZE full contexts, at most a quarter of RAM.',
    parse: auto(bytes(1)),
  },
  maxBatchSize: {
    env: 'MAX_BATCH_SIZE',
    flag: 'max-batch-size',
    default: 8,
    description: 'Most sequences decoded together (continuous batching).',
    parse: integer(1, 1024),
  },
  maxWaiting: {
    env: 'MAX_WAITING',
    flag: 'max-waiting',
    default: 64,
    description: 'Most requests waiting for a batch slot (queued or still being prepared), beyond the free slots; past it requests get 429 at once, before their images are processed.',
    parse: integer(0),
  },
  prefillChunkTokens: {
    env: 'PREFILL_CHUNK_TOKENS',
    flag: 'prefill-chunk-tokens',
    default: 512,
    description: 'Prompt positions prefilled per step, so that a long image prompt does not stall running streams.',
    parse: integer(1),
  },
  imageCacheBytes: {
    env: 'IMAGE_CACHE_SIZE',
    flag: 'image-cache-size',
    default: 256 * 2 ** 20,
    defaultText: '256MB',
    description: 'Image embedding cache (LRU, by content hash of the decoded pixels), so that questions about an image seen before skip the vision encoder; 0 turns it off.',
    parse: bytes(0),
  },
  prefixCacheBytes: {
    env: 'PREFIX_CACHE_SIZE',
    flag: 'prefix-cache-size',
    default: null,
    defaultText: 'auto (half of KV_CACHE_SIZE)',
    description:
      'Prefix cache (LRU blocks of 16 positions, images keyed by their pixels): the KV of prompts kept after they finish, so that a follow-up turn prefills only what is new; within the KV cache, whose admissions it gives way to; 0 turns it off.',
    parse: auto(bytes(0)),
  },
  warmup: {
    env: 'WARMUP',
    flag: 'warmup',
    default: true,
    description: 'Run one step through every graph before /ready turns 200.',
    parse: boolean,
  },
  ui: {
    env: 'UI',
    flag: 'ui',
    default: true,
    description: 'Serve the chat page (`ui/`) at `GET /`, a browser client of /v1/chat/completions; `--no-ui` or `UI=false` turns it off (GET / is then a 404).',
    parse: boolean,
  },
};

const KEYS = Object.keys(SETTINGS) as (keyof Config)[];

export function defaultConfig(): Config {
  return Object.fromEntries(KEYS.map((k) => [k, SETTINGS[k].default])) as unknown as Config;
}

/**
 * Resolves every setting from the command line (`--flag value` or `--flag=value`), then the
 * environment, then the default. Throws ConfigError for an unknown flag or an unusable value.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): Config {
  let flags: Record<string, string | boolean | undefined>;
  try {
    flags = parseArgs({
      args: withBareBooleans(argv),
      options: Object.fromEntries(KEYS.map((k) => [SETTINGS[k].flag, { type: 'string' as const }])),
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}; see --help`);
  }
  const config = defaultConfig() as unknown as Record<keyof Config, unknown>;
  for (const key of KEYS) {
    const s = SETTINGS[key];
    const fromFlag = flags[s.flag];
    const raw = typeof fromFlag === 'string' ? fromFlag : env[s.env];
    if (raw === undefined) continue;
    const source = typeof fromFlag === 'string' ? `--${s.flag}` : `${s.env} (environment)`;
    try {
      config[key] = s.parse(raw);
    } catch (err) {
      throw new ConfigError(`invalid setting ${key} from ${source}: ${(err as Error).message}, got ${JSON.stringify(raw)}`);
    }
  }
  return checkConfig(config as unknown as Config);
}

/**
 * `--allow-remote-images` alone reads as `--allow-remote-images true`, and `--no-ui` as
 * `--ui false`, for every boolean setting.
 */
function withBareBooleans(argv: string[]): string[] {
  const booleans = new Set(KEYS.filter((k) => SETTINGS[k].parse === (boolean as unknown)).map((k) => SETTINGS[k].flag));
  return argv.flatMap((arg, i) => {
    if (arg.startsWith('--no-') && booleans.has(arg.slice('--no-'.length))) return [`--${arg.slice('--no-'.length)}`, 'false'];
    const bare = booleans.has(arg.slice(2)) && arg.startsWith('--') && (i + 1 === argv.length || argv[i + 1].startsWith('--'));
    return bare ? [arg, 'true'] : [arg];
  });
}

/** Checks that involve more than one setting. */
export function checkConfig(config: Config): Config {
  if (config.maxUploadBytes > config.bodyLimitBytes) {
    throw new ConfigError(
      `invalid setting maxUploadBytes (MAX_UPLOAD_SIZE): ${config.maxUploadBytes} bytes is more than ` +
        `bodyLimitBytes (BODY_LIMIT, ${config.bodyLimitBytes} bytes), which bounds the whole upload`,
    );
  }
  if (config.headersTimeoutSeconds > 0 && config.bodyTimeoutSeconds > 0 && config.headersTimeoutSeconds > config.bodyTimeoutSeconds) {
    throw new ConfigError(
      `invalid setting headersTimeoutSeconds (HEADERS_TIMEOUT): ${config.headersTimeoutSeconds} s is more than ` +
        `bodyTimeoutSeconds (BODY_TIMEOUT, ${config.bodyTimeoutSeconds} s), which bounds the headers too`,
    );
  }
  return config;
}

function defaultText(key: keyof Config): string {
  const s = SETTINGS[key];
  return s.defaultText ?? String(s.default);
}

/** The --help text. */
export function settingsHelp(): string {
  const lines = KEYS.map((k) => {
    const s = SETTINGS[k];
    return `  --${s.flag} (${s.env}, default ${defaultText(k)})\n      ${s.description}`;
  });
  return (
    'usage: npm start -- [--flag value ...]   (--help: this text, --version: the version)\n' +
    `Every flag has an environment-variable twin; a flag wins over its variable. A boolean flag alone means true, --no-<flag> false.\n\n${lines.join('\n')}`
  );
}

/** The README's settings table. */
export function settingsMarkdown(): string {
  const rows = KEYS.map((k) => {
    const s = SETTINGS[k];
    return `| \`--${s.flag}\` | \`${s.env}\` | ${defaultText(k)} | ${s.description} |`;
  });
  return ['| flag | environment | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}
