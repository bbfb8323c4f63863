// `npm start [-- --flag value ...]`: the OpenAI-compatible server.
//
// Order matters: configuration is checked first (exit 2 naming the bad setting), then HTTP
// listens (exit 1 with one plain line when it cannot: port taken, address not ours), then the
// model loads, so that /health answers and /ready says "loading" meanwhile.
// SIGTERM/SIGINT shut down (src/api/shutdown.ts): /ready turns 503 at once; on SIGTERM to a ready
// server requests are still served for SHUTDOWN_DELAY seconds, so that load balancers stop
// routing here first (SIGINT, a person at a terminal, skips the delay); then new generations are
// refused, in-flight ones get up to DRAIN_TIMEOUT seconds, the rest are cancelled; then the
// listener and the engine close.

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../api/app.js';
import type { ServerVersion } from '../api/context.js';
import { EngineHost } from '../api/engine-host.js';
import { loggerOptions } from '../api/logging.js';
import { shutDown } from '../api/shutdown.js';
import { ConfigError, loadConfig, settingsHelp, type Config } from '../config.js';
import { createEngine, type EngineOptions, type LoadedEngine } from '../engine/engine.js';
import { isEngineError } from '../engine/errors.js';

/** A signal repeated within this time is the same request to stop, delivered twice. */
const REPEATED_SIGNAL_MS = 1000;

function engineOptions(c: Config): EngineOptions {
  return {
    modelId: c.servedModelName ?? undefined,
    runtime: c.runtime,
    executionProvider: c.executionProvider,
    cudaFallbackToCpu: c.cudaFallbackToCpu,
    cudaDir: c.cudaDir,
    deviceId: c.deviceId,
    intraOpNumThreads: c.intraOpThreads ?? undefined,
    visionIntraOpNumThreads: c.visionIntraOpThreads ?? undefined,
    separateVisionWorker: c.separateVisionWorker,
    kvCacheBytes: c.kvCacheBytes ?? undefined,
    maxBatchSize: c.maxBatchSize,
    maxWaiting: c.maxWaiting,
    prefillChunkTokens: c.prefillChunkTokens,
    imageCacheBytes: c.imageCacheBytes,
    prefixCacheBytes: c.prefixCacheBytes ?? undefined,
    maxImagesPerRequest: c.maxImages,
    maxImagePixels: c.maxImagePixels,
    warmup: c.warmup,
  };
}

function packageVersion(): ServerVersion {
  const path = resolve(dirname(fileURLToPath(import.meta.url)), '../../../package.json');
  const pkg = JSON.parse(readFileSync(path, 'utf8')) as { name: string; version: string };
  return { name: pkg.name, version: pkg.version };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(settingsHelp());
    return;
  }
  if (argv.includes('--version')) {
    const v = packageVersion();
    console.log(`${v.name} ${v.version}`);
    return;
  }
  let config: Config;
  try {
    config = loadConfig(argv);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`tinyllava-serve: ${err.message}`);
    process.exit(2);
  }

  const host = new EngineHost();
  const app = await buildApp({ config, host, version: packageVersion(), logger: loggerOptions(config.logLevel, { format: config.logFormat }) });
  const log = app.log;
  let engine: Promise<LoadedEngine> | null = null;

  let stopping = false;
  let stoppedAt = 0;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) {
      // npm forwards the signals it gets to node, which got the same one from the terminal
      // (Ctrl-C) or from a supervisor signalling the process group: one request to stop, twice.
      if (performance.now() - stoppedAt < REPEATED_SIGNAL_MS) return;
      log.warn({ signal }, 'second signal: exiting without draining');
      process.exit(1);
    }
    stopping = true;
    stoppedAt = performance.now();
    // Nothing routes to a server that is not ready, and a person pressing Ctrl-C wants it gone.
    const delaySeconds = signal === 'SIGTERM' && host.phase === 'ready' ? config.shutdownDelaySeconds : 0;
    log.info({ signal, inFlight: host.inFlightCount, shutdownDelaySeconds: delaySeconds }, 'shutting down: /ready is 503');
    const result = await shutDown(app, host, {
      shutdownDelayMs: delaySeconds * 1000,
      drainTimeoutMs: config.drainTimeoutSeconds * 1000,
      onDraining: () => log.info({ inFlight: host.inFlightCount, drainTimeoutSeconds: config.drainTimeoutSeconds }, 'draining'),
    });
    if (!result.drained) log.warn({ cancelled: result.cancelled }, 'drain timeout: cancelled the requests still running');
    const loaded = await engine?.catch(() => null);
    await loaded?.close();
    log.info('stopped');
    process.exit(0);
  };
  // A second signal of either kind, a second or more after the first, exits at once.
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));

  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    log.fatal({ code: (err as { code?: unknown }).code }, listenFailure(err, config));
    process.exit(1);
  }
  log.info({ ...config, apiKeys: `${config.apiKeys.length} key(s)` }, 'configuration');

  const started = performance.now();
  engine = createEngine(config.modelDir, engineOptions(config));
  try {
    const loaded = await engine;
    log.info({ model: loaded.model, modelDir: config.modelDir }, 'model package read; loading sessions');
    await host.attach(loaded);
    if (stopping) return;
    const runtime = loaded.runtime;
    if (runtime?.fallbackReason) log.warn({ runtime: runtime.kind, reason: runtime.fallbackReason }, `runtime ${runtime.kind}: ${runtime.fallbackReason}`);
    else log.info({ runtime: runtime?.kind }, `runtime ${runtime?.kind}`);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    log.info({ model: loaded.model.id, executionProvider: loaded.executionProvider, seconds }, 'model ready');
  } catch (err) {
    if (stopping) return; // closing the engine while it loaded: shutdown() exits
    host.fail(err);
    // A package that cannot be served is said once, plainly; anything else is a bug, with its stack.
    if (isEngineError(err) && err.code === 'model_error') log.fatal({ modelDir: config.modelDir }, `the model failed to load: ${err.message}`);
    else log.fatal({ err }, 'the model failed to load');
    await app.close();
    process.exit(1);
  }
}

/** Why listening failed, in the words of someone who has to fix it. */
function listenFailure(err: unknown, config: Config): string {
  const where = `${config.host}:${config.port}`;
  switch ((err as { code?: unknown }).code) {
    case 'EADDRINUSE':
      return `cannot listen on ${where}: the port is already in use (another server running?); stop it or choose another port with --port or PORT`;
    case 'EACCES':
      return `cannot listen on ${where}: permission denied (ports below 1024 need privileges); choose another port with --port or PORT`;
    case 'EADDRNOTAVAIL':
      return `cannot listen on ${where}: that address is not one of this machine's; choose another with --host or HOST (0.0.0.0 for every interface)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot listen on ${where}: the host name does not resolve; use an IP address with --host or HOST`;
    default:
      return `cannot listen on ${where}: ${(err as Error).message}`;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
