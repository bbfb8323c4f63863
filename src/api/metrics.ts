// Prometheus metrics: vLLM's names under the prefix `tinyllava_`, plus the parts of the time to
// first token that only a vision-language server has (image decode + preprocessing, vision
// encoder), images processed, and errors by type. One registry per app, so that tests (and
// several apps in one process) never share counters.
//
// The running/waiting/KV-cache gauges and the image cache's numbers are read from the engine's
// optional `stats()` when /metrics is scraped; an engine without it reports them as 0. The image
// cache counters are the engine's own running totals, copied at scrape time.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine, EngineStats, GenerationEvent } from '../engine/types.js';

export const PREFIX = 'tinyllava_';

// Seconds: from a tiny model's milliseconds to a 3B model's minutes on CPU.
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640];
const TOKEN_GAP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5];

type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

export class ApiMetrics {
  readonly registry = new Registry();
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly e2e: Histogram;
  private readonly queue: Histogram;
  private readonly prefill: Histogram;
  private readonly decode: Histogram;
  private readonly imagePreprocess: Histogram;
  private readonly visionEncoder: Histogram;
  private readonly promptTokens: Counter;
  private readonly generationTokens: Counter;
  private readonly success: Counter<'finished_reason'>;
  private readonly images: Counter;
  private readonly errors: Counter<'type' | 'code'>;
  private readonly timeouts: Counter;
  private readonly cancellations: Counter;
  private readonly imageFetches: Counter<'result'>;
  private readonly imageFetchTime: Histogram;

  constructor(engine: () => Engine | null, options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    const stats = (): EngineStats | null => engine()?.stats?.() ?? null;

    new Gauge({
      name: `${PREFIX}num_requests_running`,
      help: 'Sequences in the running batch.',
      registers,
      collect() {
        this.set(stats()?.running ?? 0);
      },
    });
    new Gauge({
      name: `${PREFIX}num_requests_waiting`,
      help: 'Sequences waiting for a batch slot.',
      registers,
      collect() {
        this.set(stats()?.waiting ?? 0);
      },
    });
    new Gauge({
      name: `${PREFIX}kv_cache_usage_perc`,
      help: 'Fraction of the KV cache reserved by admitted sequences (0..1); admission stops at 1.',
      registers,
      collect() {
        const kv = stats()?.kvCache;
        this.set(kv && kv.capacityBytes > 0 ? kv.reservedBytes / kv.capacityBytes : 0);
      },
    });

    const imageCache = (): NonNullable<EngineStats['imageCache']> | null => stats()?.imageCache ?? null;
    new Counter({
      name: `${PREFIX}image_cache_hits_total`,
      help: 'Images whose embeddings came from the image cache (or an encode of the same image under way): no vision encoder run.',
      registers,
      collect() {
        this.reset();
        this.inc(imageCache()?.hits ?? 0);
      },
    });
    new Counter({
      name: `${PREFIX}image_cache_misses_total`,
      help: 'Images looked up in the image cache and sent to the vision encoder.',
      registers,
      collect() {
        this.reset();
        this.inc(imageCache()?.misses ?? 0);
      },
    });
    new Gauge({
      name: `${PREFIX}image_cache_bytes`,
      help: 'Bytes of image embeddings held by the image cache.',
      registers,
      collect() {
        this.set(imageCache()?.bytes ?? 0);
      },
    });

    const histogram = (name: string, help: string, buckets = LATENCY_BUCKETS): Histogram =>
      new Histogram({ name: `${PREFIX}${name}`, help, buckets, registers });
    this.ttft = histogram('time_to_first_token_seconds', 'From arrival at the engine to the first generated token.');
    this.itl = histogram('inter_token_latency_seconds', 'Between streamed tokens, as the API sees them.', TOKEN_GAP_BUCKETS);
    this.e2e = histogram('e2e_request_latency_seconds', 'From the HTTP request to the last token.');
    this.queue = histogram('request_queue_time_seconds', 'Waiting for a batch slot (part of the time to first token).');
    this.prefill = histogram('request_prefill_time_seconds', 'From admission to the first token: the prompt prefill (part of the time to first token).');
    this.decode = histogram('request_decode_time_seconds', 'From the first token to the last.');
    this.imagePreprocess = histogram(
      'request_image_preprocess_time_seconds',
      'Image decoding, resizing and normalisation of a request (part of the time to first token).',
    );
    this.visionEncoder = histogram('request_vision_encoder_time_seconds', 'Vision encoder and connector of a request (part of the time to first token).');

    this.promptTokens = new Counter({ name: `${PREFIX}prompt_tokens_total`, help: 'Prompt positions processed, image tokens included.', registers });
    this.generationTokens = new Counter({ name: `${PREFIX}generation_tokens_total`, help: 'Tokens generated.', registers });
    this.success = new Counter({
      name: `${PREFIX}request_success_total`,
      help: 'Generations that ended, by finish reason (stop, length, abort: the client went away).',
      labelNames: ['finished_reason'],
      registers,
    });
    this.images = new Counter({ name: `${PREFIX}images_processed_total`, help: 'Images decoded and encoded.', registers });
    this.errors = new Counter({
      name: `${PREFIX}request_errors_total`,
      help: 'Requests answered with an error (or ended by an error event), by OpenAI error type and code.',
      labelNames: ['type', 'code'],
      registers,
    });
    this.timeouts = new Counter({
      name: `${PREFIX}request_timeouts_total`,
      help: 'Generations that REQUEST_TIMEOUT ended: cut short (finish_reason length) or refused with 503 before their first token.',
      registers,
    });
    this.cancellations = new Counter({
      name: `${PREFIX}requests_cancelled_total`,
      help: 'HTTP requests whose client went away before the response was complete: during the upload, an image fetch, the queue or the generation.',
      registers,
    });
    this.imageFetches = new Counter({
      name: `${PREFIX}image_fetches_total`,
      help: 'Remote image URLs fetched, by result: ok, refused (not allowed, private address), failed (network, HTTP status, redirects), timeout, too_large, not_an_image.',
      labelNames: ['result'],
      registers,
    });
    this.imageFetchTime = histogram('image_fetch_seconds', 'Time to fetch one remote image, redirects included (part of the time to first token).');
  }

  /** One choice's generation ended. */
  generationDone(event: DoneEvent, e2eSeconds: number, imagesPerChoice: number): void {
    const t = event.timings;
    this.ttft.observe(t.firstToken);
    this.e2e.observe(e2eSeconds);
    this.queue.observe(t.queue);
    this.prefill.observe(t.prefill);
    this.decode.observe(t.decode);
    if (imagesPerChoice > 0) {
      this.imagePreprocess.observe(t.imagePreprocess);
      this.visionEncoder.observe(t.visionEncoder);
      this.images.inc(imagesPerChoice);
    }
    this.promptTokens.inc(event.usage.promptTokens);
    this.generationTokens.inc(event.usage.completionTokens);
    const reason = event.finishReason === 'cancelled' ? 'abort' : event.finishReason === 'deadline' ? 'length' : event.finishReason;
    this.success.inc({ finished_reason: reason });
    if (event.finishReason === 'deadline') this.timeouts.inc();
  }

  /** `tokens` tokens arrived together, `seconds` after the previous ones. */
  tokensStreamed(seconds: number, tokens: number): void {
    for (let i = 0; i < tokens; i++) this.itl.observe(seconds / tokens);
  }

  error(type: string, code: string): void {
    this.errors.inc({ type, code });
    if (code === 'deadline_exceeded') this.timeouts.inc();
  }

  /** The client of a request went away before its response was complete. */
  cancelled(): void {
    this.cancellations.inc();
  }

  imageFetched(result: ImageFetchResult, seconds: number): void {
    this.imageFetches.inc({ result });
    this.imageFetchTime.observe(seconds);
  }
}

export type ImageFetchResult = 'ok' | 'refused' | 'failed' | 'timeout' | 'too_large' | 'not_an_image';
