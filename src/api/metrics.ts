// Prometheus metrics: vLLM's names under the prefix `tinyllava_`, plus the parts of the time to
// first token that only a vision-language server has (image decode + preprocessing, vision
// encoder), images processed, and errors by type. One registry per app, so that tests (and
// several apps in one process) never share counters.
//
// Every series of ours carries `model_name` (the served model id), as vLLM's do, so that
// dashboards written for vLLM filter the same way; it is empty for errors answered before the
// model package was read. Node's process metrics come without it, and without prom-client's
// gauges named `*_total` (a counter's suffix; `promtool check metrics` refuses them): their
// by-type twins (`nodejs_active_handles` etc.) remain, and sum() of one is its total.
//
// The running/waiting/KV-cache gauges and the image and prefix caches' numbers are read from the engine's
// optional `stats()` when /metrics is scraped; an engine without it reports them as 0, no engine
// yet (the package is being read) as no series. The image and
// prefix cache counters are the engine's own running totals, copied at scrape time.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine, EngineStats, GenerationEvent } from '../engine/types.js';

export const PREFIX = 'tinyllava_';

// Seconds: from a tiny model's milliseconds to a 3B model's minutes on CPU.
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640];
const TOKEN_GAP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5];

type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

const MODEL_NAME = 'model_name';
type ModelLabel = typeof MODEL_NAME;

/** prom-client's default gauges whose names end in `_total`, removed from the registry. */
const GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export class ApiMetrics {
  readonly registry = new Registry();
  private readonly ttft: Histogram<ModelLabel>;
  private readonly itl: Histogram<ModelLabel>;
  private readonly e2e: Histogram<ModelLabel>;
  private readonly queue: Histogram<ModelLabel>;
  private readonly prefill: Histogram<ModelLabel>;
  private readonly decode: Histogram<ModelLabel>;
  private readonly imagePreprocess: Histogram<ModelLabel>;
  private readonly visionEncoder: Histogram<ModelLabel>;
  private readonly promptTokens: Counter<ModelLabel>;
  private readonly generationTokens: Counter<ModelLabel>;
  private readonly success: Counter<ModelLabel | 'finished_reason'>;
  private readonly images: Counter<ModelLabel>;
  private readonly errors: Counter<ModelLabel | 'type' | 'code'>;
  private readonly timeouts: Counter<ModelLabel>;
  private readonly cancellations: Counter<ModelLabel>;
  private readonly imageFetches: Counter<ModelLabel | 'result'>;
  private readonly imageFetchTime: Histogram<ModelLabel>;
  private readonly model: () => { [MODEL_NAME]: string };

  constructor(engine: () => Engine | null, options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.processMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
      for (const name of GAUGES_NAMED_TOTAL) this.registry.removeSingleMetric(`${PREFIX}${name}`);
    }
    const model = (this.model = () => ({ [MODEL_NAME]: engine()?.model.id ?? '' }));
    const labelNames = [MODEL_NAME];
    const stats = (): EngineStats | null => engine()?.stats?.() ?? null;
    // Read at scrape time; no series until the engine exists (its model id is the label).
    const scraped = (kind: 'gauge' | 'counter', name: string, help: string, value: (s: EngineStats | null) => number): void => {
      const read = (): number | null => (engine() === null ? null : value(stats()));
      const base = { name: `${PREFIX}${name}`, help, labelNames, registers };
      if (kind === 'gauge') {
        new Gauge({
          ...base,
          collect() {
            this.reset();
            const v = read();
            if (v !== null) this.set(model(), v);
          },
        });
      } else {
        new Counter({
          ...base,
          collect() {
            this.reset();
            const v = read();
            if (v !== null) this.inc(model(), v);
          },
        });
      }
    };

    scraped('gauge', 'num_requests_running', 'Sequences in the running batch.', (s) => s?.running ?? 0);
    scraped('gauge', 'num_requests_waiting', 'Sequences waiting for a batch slot.', (s) => s?.waiting ?? 0);
    scraped('gauge', 'kv_cache_usage_perc', 'Fraction of the KV cache reserved by admitted sequences (0..1); admission stops at 1.', (s) =>
      s?.kvCache && s.kvCache.capacityBytes > 0 ? s.kvCache.reservedBytes / s.kvCache.capacityBytes : 0,
    );
    scraped(
      'counter',
      'image_cache_hits_total',
      'Images whose embeddings came from the image cache (or an encode of the same image under way): no vision encoder run.',
      (s) => s?.imageCache?.hits ?? 0,
    );
    scraped('counter', 'image_cache_misses_total', 'Images looked up in the image cache and sent to the vision encoder.', (s) => s?.imageCache?.misses ?? 0);
    scraped('gauge', 'image_cache_bytes', 'Bytes of image embeddings held by the image cache.', (s) => s?.imageCache?.bytes ?? 0);
    // The prefix cache, counted in prompt positions as vLLM counts prefix_cache_queries/hits.
    scraped('counter', 'prefix_cache_queries_total', 'Prompt positions of admitted requests looked up in the prefix cache.', (s) => s?.prefixCache?.queries ?? 0);
    scraped('counter', 'prefix_cache_hits_total', 'Prompt positions loaded from the prefix cache instead of being prefilled.', (s) => s?.prefixCache?.hits ?? 0);
    scraped(
      'gauge',
      'prefix_cache_bytes',
      'Bytes of KV held by the prefix cache (within the KV cache capacity; given up to admission on demand).',
      (s) => s?.prefixCache?.bytes ?? 0,
    );

    const histogram = (name: string, help: string, buckets = LATENCY_BUCKETS): Histogram<ModelLabel> =>
      new Histogram({ name: `${PREFIX}${name}`, help, buckets, labelNames, registers });
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

    this.promptTokens = new Counter({ name: `${PREFIX}prompt_tokens_total`, help: 'Prompt positions processed, image tokens included.', labelNames, registers });
    this.generationTokens = new Counter({ name: `${PREFIX}generation_tokens_total`, help: 'Tokens generated.', labelNames, registers });
    this.success = new Counter({
      name: `${PREFIX}request_success_total`,
      help: 'Generations that ended, by finish reason (stop, length, abort: the client went away).',
      labelNames: [MODEL_NAME, 'finished_reason'],
      registers,
    });
    this.images = new Counter({ name: `${PREFIX}images_processed_total`, help: 'Images decoded and encoded.', labelNames, registers });
    this.errors = new Counter({
      name: `${PREFIX}request_errors_total`,
      help: 'Requests answered with an error (or ended by an error event), by OpenAI error type and code.',
      labelNames: [MODEL_NAME, 'type', 'code'],
      registers,
    });
    this.timeouts = new Counter({
      name: `${PREFIX}request_timeouts_total`,
      help: 'Generations that REQUEST_TIMEOUT ended: cut short (finish_reason length) or refused with 503 before their first token.',
      labelNames,
      registers,
    });
    this.cancellations = new Counter({
      name: `${PREFIX}requests_cancelled_total`,
      help: 'HTTP requests whose client went away before the response was complete: during the upload, an image fetch, the queue or the generation.',
      labelNames,
      registers,
    });
    this.imageFetches = new Counter({
      name: `${PREFIX}image_fetches_total`,
      help: 'Remote image URLs fetched, by result: ok, refused (not allowed, private address), failed (network, HTTP status, redirects), timeout, too_large, not_an_image.',
      labelNames: [MODEL_NAME, 'result'],
      registers,
    });
    this.imageFetchTime = histogram('image_fetch_seconds', 'Time to fetch one remote image, redirects included (part of the time to first token).');
  }

  /** One choice's generation ended. */
  generationDone(event: DoneEvent, e2eSeconds: number, imagesPerChoice: number): void {
    const t = event.timings;
    const m = this.model();
    this.ttft.observe(m, t.firstToken);
    this.e2e.observe(m, e2eSeconds);
    this.queue.observe(m, t.queue);
    this.prefill.observe(m, t.prefill);
    this.decode.observe(m, t.decode);
    if (imagesPerChoice > 0) {
      this.imagePreprocess.observe(m, t.imagePreprocess);
      this.visionEncoder.observe(m, t.visionEncoder);
      this.images.inc(m, imagesPerChoice);
    }
    this.promptTokens.inc(m, event.usage.promptTokens);
    this.generationTokens.inc(m, event.usage.completionTokens);
    const reason = event.finishReason === 'cancelled' ? 'abort' : event.finishReason === 'deadline' ? 'length' : event.finishReason;
    this.success.inc({ ...m, finished_reason: reason });
    if (event.finishReason === 'deadline') this.timeouts.inc(m);
  }

  /** `tokens` tokens arrived together, `seconds` after the previous ones. */
  tokensStreamed(seconds: number, tokens: number): void {
    const m = this.model();
    for (let i = 0; i < tokens; i++) this.itl.observe(m, seconds / tokens);
  }

  error(type: string, code: string): void {
    const m = this.model();
    this.errors.inc({ ...m, type, code });
    if (code === 'deadline_exceeded') this.timeouts.inc(m);
  }

  /** The client of a request went away before its response was complete. */
  cancelled(): void {
    this.cancellations.inc(this.model());
  }

  imageFetched(result: ImageFetchResult, seconds: number): void {
    const m = this.model();
    this.imageFetches.inc({ ...m, result });
    this.imageFetchTime.observe(m, seconds);
  }
}

export type ImageFetchResult = 'ok' | 'refused' | 'failed' | 'timeout' | 'too_large' | 'not_an_image';
