// src/config.ts: flag > environment > default, a message naming the setting for every bad value,
// and the README's table rendered from the same definitions.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, defaultConfig, loadConfig, SETTINGS, settingsHelp, settingsMarkdown } from '../../src/config.js';
import { repoRoot } from './support/harness.js';

describe('configuration', () => {
  test('defaults: the bundled model on 127.0.0.1:8000, a 32 MiB body limit', () => {
    const c = loadConfig([], {});
    assert.deepEqual(c, defaultConfig());
    assert.equal(c.modelDir, join(repoRoot, 'models/tinyllava-demo'));
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.port, 8000);
    assert.equal(c.bodyLimitBytes, 32 * 1024 * 1024);
    assert.deepEqual(c.apiKeys, []);
  });

  test('a flag wins over its environment variable, which wins over the default', () => {
    assert.equal(loadConfig([], { PORT: '8001' }).port, 8001);
    assert.equal(loadConfig(['--port', '9000'], { PORT: '8001' }).port, 9000);
    assert.equal(loadConfig(['--port=9001'], {}).port, 9001);
    assert.equal(loadConfig(['--model', 'some/dir'], { MODEL_DIR: '/elsewhere' }).modelDir, join(process.cwd(), 'some/dir'));
    assert.equal(loadConfig([], { MODEL_DIR: '/elsewhere' }).modelDir, '/elsewhere');
  });

  test('values are parsed: sizes with units, lists, booleans, auto', () => {
    const c = loadConfig(['--body-limit', '64MB', '--kv-cache-size', '2GB', '--warmup', 'false'], {
      API_KEYS: ' a, b,,c ',
      MAX_UPLOAD_SIZE: '512k',
      VISION_INTRA_OP_THREADS: '2',
      INTRA_OP_THREADS: 'auto',
      EXECUTION_PROVIDER: 'cuda',
      REQUEST_TIMEOUT: '2.5',
      IMAGE_CACHE_SIZE: '64MB',
    });
    assert.equal(c.bodyLimitBytes, 64 * 2 ** 20);
    assert.equal(c.kvCacheBytes, 2 * 2 ** 30);
    assert.equal(c.maxUploadBytes, 512 * 1024);
    assert.equal(c.warmup, false);
    assert.deepEqual(c.apiKeys, ['a', 'b', 'c']);
    assert.equal(c.visionIntraOpThreads, 2);
    assert.equal(c.intraOpThreads, null);
    assert.equal(c.executionProvider, 'cuda');
    assert.equal(c.requestTimeoutSeconds, 2.5);
    assert.equal(c.imageCacheBytes, 64 * 2 ** 20);
    assert.equal(loadConfig(['--image-cache-size', '0'], {}).imageCacheBytes, 0, '0 turns the image cache off');
    assert.equal(defaultConfig().imageCacheBytes, 256 * 2 ** 20);
  });

  test('the HTTP hardening settings: origins, remote images, timeouts, log format, bare boolean flags', () => {
    const d = defaultConfig();
    assert.deepEqual([d.allowedOrigins, d.allowRemoteImages, d.allowedImageDomains, d.logFormat], [[], false, [], 'auto']);
    assert.deepEqual([d.headersTimeoutSeconds, d.bodyTimeoutSeconds, d.keepAliveTimeoutSeconds, d.imageFetchTimeoutSeconds], [10, 60, 5, 10]);
    const c = loadConfig(['--allowed-origins', 'https://app.example.com, http://localhost:3000', '--allow-remote-images', '--log-format', 'pretty'], {
      ALLOWED_IMAGE_DOMAINS: 'Images.Example.COM., 10.0.0.7,[::1]',
      HEADERS_TIMEOUT: '2.5',
      BODY_TIMEOUT: '0',
      KEEP_ALIVE_TIMEOUT: '65',
      IMAGE_FETCH_TIMEOUT: '3',
    });
    assert.deepEqual(c.allowedOrigins, ['https://app.example.com', 'http://localhost:3000']);
    assert.equal(c.allowRemoteImages, true);
    assert.deepEqual(c.allowedImageDomains, ['images.example.com', '10.0.0.7', '[::1]']);
    assert.equal(c.logFormat, 'pretty');
    assert.deepEqual([c.headersTimeoutSeconds, c.bodyTimeoutSeconds, c.keepAliveTimeoutSeconds, c.imageFetchTimeoutSeconds], [2.5, 0, 65, 3]);
    assert.equal(loadConfig(['--allow-remote-images', 'false'], {}).allowRemoteImages, false);
    assert.equal(loadConfig(['--allowed-origins', '*'], {}).allowedOrigins[0], '*');
  });

  test('the chat page: on by default, off with --no-ui, --ui false or UI=false; --no-<flag> for every boolean', () => {
    assert.equal(defaultConfig().ui, true);
    assert.equal(loadConfig(['--no-ui'], {}).ui, false);
    assert.equal(loadConfig(['--no-ui', '--port', '9000'], {}).ui, false);
    assert.equal(loadConfig(['--ui', 'false'], {}).ui, false);
    assert.equal(loadConfig([], { UI: 'false' }).ui, false);
    assert.equal(loadConfig(['--ui'], { UI: 'false' }).ui, true, 'a bare flag wins over its variable');
    assert.equal(loadConfig(['--no-ui'], { UI: 'true' }).ui, false);
    assert.equal(loadConfig(['--no-warmup'], {}).warmup, false);
    assert.equal(loadConfig(['--no-separate-vision-worker'], {}).separateVisionWorker, false);
    assert.throws(() => loadConfig(['--no-port'], {}), /Unknown option '--no-port'/, 'only booleans have a --no- form');
  });

  const bad: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [[], { ALLOWED_ORIGINS: 'https://app.example.com/' }, /allowedOrigins from ALLOWED_ORIGINS.*scheme, host and port only/],
    [[], { ALLOWED_ORIGINS: 'app.example.com' }, /allowedOrigins .*must be \* or origins/],
    [[], { ALLOWED_IMAGE_DOMAINS: 'https://images.example.com' }, /allowedImageDomains .*host names/],
    [[], { ALLOWED_IMAGE_DOMAINS: 'images.example.com/cats' }, /allowedImageDomains .*host names/],
    [[], { LOG_FORMAT: 'xml' }, /logFormat .*must be one of auto, json, pretty/],
    [[], { KEEP_ALIVE_TIMEOUT: '0' }, /keepAliveTimeoutSeconds .*> 0/],
    [[], { HEADERS_TIMEOUT: '30', BODY_TIMEOUT: '20' }, /headersTimeoutSeconds \(HEADERS_TIMEOUT\).*bodyTimeoutSeconds \(BODY_TIMEOUT/],
    [['--allow-remote-images', 'maybe'], {}, /allowRemoteImages .*true or false/],
    [[], { PORT: 'abc' }, /invalid setting port from PORT \(environment\): must be an integer from 0 to 65535, got "abc"/],
    [['--port', '70000'], {}, /invalid setting port from --port: .*got "70000"/],
    [[], { BODY_LIMIT: '32XB' }, /bodyLimitBytes from BODY_LIMIT .*must be a size/],
    [[], { LOG_LEVEL: 'loud' }, /logLevel from LOG_LEVEL .*must be one of fatal, error/],
    [[], { EXECUTION_PROVIDER: 'tpu' }, /executionProvider .*must be one of cpu, cuda/],
    [[], { WARMUP: 'maybe' }, /warmup .*must be true or false/],
    [[], { DRAIN_TIMEOUT: '-1' }, /drainTimeoutSeconds .*seconds >= 0/],
    [[], { MAX_IMAGES: '0' }, /maxImages .*integer from 1 to 64/],
    [[], { HOST: ' ' }, /host .*must not be empty/],
    [[], { IMAGE_CACHE_SIZE: '-1' }, /imageCacheBytes from IMAGE_CACHE_SIZE .*must be a size/],
    [['--nope', '1'], {}, /Unknown option '--nope'.*--help/],
    [['positional'], {}, /positional/],
    [[], { MAX_UPLOAD_SIZE: '64MB', BODY_LIMIT: '32MB' }, /maxUploadBytes \(MAX_UPLOAD_SIZE\).*bodyLimitBytes \(BODY_LIMIT/],
  ];
  for (const [argv, env, message] of bad) {
    test(`refused: ${[...argv, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)].join(' ')}`, () => {
      assert.throws(() => loadConfig(argv, env), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, message);
        return true;
      });
    });
  }

  test('every setting has its own flag and environment variable', () => {
    const all = Object.values(SETTINGS);
    assert.equal(new Set(all.map((s) => s.env)).size, all.length);
    assert.equal(new Set(all.map((s) => s.flag)).size, all.length);
    for (const s of all) assert.ok(settingsHelp().includes(`--${s.flag} (${s.env},`));
  });

  test('the README carries the settings table exactly as config.ts renders it', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    assert.ok(readme.includes(settingsMarkdown()), 'README.md is out of date: paste settingsMarkdown() into its Configuration section');
  });
});
