// The engine's contract with the API layer. The api layer depends only on this file (and the
// engine's factory); tests of the api layer can run against a fake that implements `Engine`.

/** One message part after validation: text, or an already-fetched image (encoded bytes). */
export type ContentPart =
  | { type: 'text'; text: string }
  | { type: 'image'; data: Uint8Array };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | ContentPart[];
}

/** Sampling settings with every default resolved. temperature 0 means greedy. */
export interface SamplingParams {
  temperature: number;
  topP: number; // 1 = off
  topK: number; // 0 = off
  minP: number; // 0 = off
  repetitionPenalty: number; // 1 = off
  presencePenalty: number; // 0 = off
  frequencyPenalty: number; // 0 = off
  seed: number | null; // null: a random seed
}

/** A request the engine accepts: validated, with defaults and limits resolved. */
export interface GenerationRequest {
  id: string;
  messages: ChatMessage[];
  sampling: SamplingParams;
  maxTokens: number | null; // null: up to the model's context
  stop: string[]; // stop strings, matched across token boundaries, never emitted
  ignoreEos: boolean; // benchmark extension: keep generating past EOS
  logprobs: number | null; // null: none; 0..20: chosen token plus that many alternatives
  deadlineMs: number | null; // absolute Date.now() deadline, null for none
  /** Structured output: every generated token keeps the answer inside this grammar. */
  constraint?: OutputConstraint | null;
}

/**
 * A grammar the answer must follow (src/engine/grammar.ts); `param` names the request field it
 * came from, for errors. JSON mode (any object) is the schema {"type": "object"}.
 */
export type OutputConstraint = { param: string } & (
  | { type: 'json_schema'; schema: unknown }
  | { type: 'regex'; pattern: string } // Rust regex syntax, matched against the whole answer
  | { type: 'choice'; choices: string[] } // exactly one of these strings
  | { type: 'grammar'; grammar: string } // llguidance's Lark dialect
);

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'deadline';

export interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top: { token: string; logprob: number; bytes: number[] }[];
}

/**
 * Streamed to the caller in order: one `delta` per generated token (its `text` may be empty
 * while characters are incomplete or a stop string may be starting; held-back text comes with
 * a later token), then exactly one `done` (or a thrown error). A final EOS has no delta.
 */
export type GenerationEvent =
  | { type: 'delta'; text: string; tokenIds: number[]; logprobs?: TokenLogprob[] }
  | {
      type: 'done';
      finishReason: FinishReason;
      /** cachedTokens: prompt positions loaded from the prefix cache instead of prefilled. */
      usage: { promptTokens: number; completionTokens: number; imageTokens: number; cachedTokens: number };
      timings: GenerationTimings;
    };

/** Where the time went, for metrics (seconds). */
export interface GenerationTimings {
  imagePreprocess: number;
  visionEncoder: number;
  queue: number;
  prefill: number;
  decode: number;
  firstToken: number; // from arrival to the first generated token
}

export interface ModelInfo {
  id: string; // the served model name
  maxContext: number;
  numImageTokens: number;
}

/** Live numbers for the gauges of /metrics. */
export interface EngineStats {
  running: number; // sequences admitted to the batch
  waiting: number; // sequences waiting for a batch slot
  kvCache: { usedBytes: number; reservedBytes: number; capacityBytes: number } | null;
  /** The image embedding cache, when there is one: lookups that skipped or needed the vision encoder. */
  imageCache?: { hits: number; misses: number; bytes: number; entries: number };
  /**
   * The prefix cache, when there is one: prompt positions looked up (every admitted prompt's
   * length) and found (loaded instead of prefilled), as vLLM counts them; bytes it holds.
   */
  prefixCache?: { queries: number; hits: number; bytes: number };
}

/** What /tokenize counts: a plain text, or a conversation rendered as a chat completion renders it. */
export type TokenizeInput =
  | { type: 'text'; text: string; addSpecialTokens: boolean }
  | { type: 'chat'; messages: ChatMessage[]; addGenerationPrompt: boolean };

/** Stands for each image position in tokenize results (LLaVA's IMAGE_TOKEN_INDEX). */
export const IMAGE_POSITION_ID = -200;

export interface TokenizeResult {
  /** One entry per prompt position: token ids, and IMAGE_POSITION_ID num_image_tokens times per image. */
  ids: number[];
  /** Each position's vocabulary string (an image position: the image placeholder). */
  strings: string[];
}

export interface Engine {
  readonly model: ModelInfo;
  /** Live numbers for metrics; optional so that fakes and other backends may omit them. */
  stats?(): EngineStats;
  /** Starts generation; the iterable ends after `done`. Aborting `signal` cancels within one step. */
  generate(request: GenerationRequest, signal?: AbortSignal): AsyncIterable<GenerationEvent>;
  /**
   * Token ids as the model would see them, without generating; works while the sessions load.
   * Rejects with context_length_exceeded when the text surely cannot fit the context.
   */
  tokenize(input: TokenizeInput): Promise<TokenizeResult>;
  /** The text of token ids, special tokens kept; rejects ids outside the vocabulary (invalid_request). */
  detokenize(ids: number[]): Promise<string>;
  /** Resolves once sessions are loaded and a warm-up step ran. */
  ready(): Promise<void>;
  /** Stops accepting work, finishes or cancels what runs, frees workers. */
  close(): Promise<void>;
}
