// A chat completion request, already checked against openapi.yaml -> what the engine runs:
// one GenerationRequest per choice with every default resolved, plus the few wire options the
// response needs. The rules that a schema cannot say live here (images only in user messages,
// the image count, fields that only make sense together); each throws a 400 naming the field.

import type { ChatMessage, ContentPart, GenerationRequest, OutputConstraint } from '../engine/types.js';
import { ApiError } from './errors.js';
import { imageFromUrl, type Uploads } from './image-url.js';
import type { Schemas } from './openapi.js';
import type { RemoteImages } from './remote-image.js';

export type ChatCompletionRequest = Schemas['ChatCompletionRequest'];

/** An image part whose bytes are still to be fetched (remote-image.ts fills `part.data`). */
export interface PendingImage {
  part: { type: 'image'; data: Uint8Array };
  url: string;
  param: string;
}

export interface PlannedMessages {
  messages: ChatMessage[];
  imageCount: number;
  /** The request field of each image, in prompt order: `messages[0].content[1].image_url.url`, or the upload's field. */
  imageParams: string[];
  /** http(s) images, in prompt order. */
  remote: PendingImage[];
}

export interface ChatPlan {
  /** The served model's id, echoed in the response. */
  model: string;
  stream: boolean;
  includeUsage: boolean;
  logprobs: boolean;
  /** One request per choice (n), each with its own id and seed. */
  requests: GenerationRequest[];
  imageCount: number;
  imageParams: string[];
  remote: PendingImage[];
}

export interface PlanContext {
  requestId: string;
  modelId: string;
  maxImages: number;
  /** 0: no deadline. */
  requestTimeoutSeconds: number;
  /** Files of a multipart request, for upload:// URLs. */
  uploads?: Uploads;
  /** The remote image fetcher, when the server has one (http(s) URLs are refused without). */
  remote?: RemoteImages | null;
  now?: number;
}

/** A request's `model`, when given, must be the served one. */
export function checkModel(model: string | undefined, modelId: string): void {
  if (model !== undefined && model !== modelId) {
    throw new ApiError('model_not_found', `model ${JSON.stringify(model.slice(0, 64))} is not served here; this server serves ${JSON.stringify(modelId)}`, {
      param: 'model',
    });
  }
}

export function planChatCompletion(body: ChatCompletionRequest, ctx: PlanContext): ChatPlan {
  checkModel(body.model, ctx.modelId);
  // stream_options needs stream, top_logprobs needs logprobs: the schema says so (dependentSchemas).
  const stream = body.stream ?? false;
  const logprobs = body.logprobs ?? false;
  if (body.max_tokens != null && body.max_completion_tokens != null && body.max_tokens !== body.max_completion_tokens) {
    throw new ApiError(
      'invalid_request',
      `max_tokens (${body.max_tokens}) and max_completion_tokens (${body.max_completion_tokens}) disagree; send one of them`,
      { param: 'max_completion_tokens' },
    );
  }

  const { messages, imageCount, imageParams, remote } = planMessages(body.messages, ctx);
  const n = body.n ?? 1;
  const seed = body.seed ?? null;
  const deadlineMs = ctx.requestTimeoutSeconds > 0 ? (ctx.now ?? Date.now()) + ctx.requestTimeoutSeconds * 1000 : null;
  const base: Omit<GenerationRequest, 'id' | 'sampling'> = {
    messages,
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? null,
    stop: body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : [...body.stop],
    ignoreEos: body.ignore_eos ?? false,
    logprobs: logprobs ? (body.top_logprobs ?? 0) : null,
    deadlineMs,
    constraint: outputConstraint(body),
  };
  const requests = Array.from({ length: n }, (_, i): GenerationRequest => ({
    ...base,
    id: n === 1 ? ctx.requestId : `${ctx.requestId}/${i}`,
    sampling: {
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? 1,
      topK: body.top_k === undefined || body.top_k < 0 ? 0 : body.top_k,
      minP: body.min_p ?? 0,
      repetitionPenalty: body.repetition_penalty ?? 1,
      presencePenalty: body.presence_penalty ?? 0,
      frequencyPenalty: body.frequency_penalty ?? 0,
      // n answers to one seeded request must differ from each other and stay reproducible.
      seed: seed === null ? null : seedFor(seed, i),
    },
  }));
  return {
    model: ctx.modelId,
    stream,
    includeUsage: body.stream_options?.include_usage ?? false,
    logprobs,
    requests,
    imageCount,
    imageParams,
    remote,
  };
}

/**
 * The structured-output constraint: response_format json_object / json_schema, or one of vLLM's
 * guided_* fields; at most one of them. The engine compiles it (and refuses what it cannot).
 */
function outputConstraint(body: ChatCompletionRequest): OutputConstraint | null {
  const found: OutputConstraint[] = [];
  const rf = body.response_format;
  if (rf?.type === 'json_object') found.push({ type: 'json_schema', schema: { type: 'object' }, param: 'response_format' });
  if (rf?.type === 'json_schema') {
    found.push({ type: 'json_schema', schema: rf.json_schema.schema ?? {}, param: 'response_format.json_schema.schema' });
  }
  if (body.guided_json !== undefined) {
    let schema: unknown = body.guided_json;
    if (typeof schema === 'string') {
      try {
        schema = JSON.parse(schema);
      } catch (err) {
        throw new ApiError('invalid_request', `guided_json is not valid JSON: ${(err as Error).message}`, { param: 'guided_json' });
      }
    }
    found.push({ type: 'json_schema', schema, param: 'guided_json' });
  }
  if (body.guided_regex !== undefined) found.push({ type: 'regex', pattern: body.guided_regex, param: 'guided_regex' });
  if (body.guided_choice !== undefined) found.push({ type: 'choice', choices: body.guided_choice, param: 'guided_choice' });
  if (body.guided_grammar !== undefined) found.push({ type: 'grammar', grammar: body.guided_grammar, param: 'guided_grammar' });
  if (found.length > 1) {
    const name = (c: OutputConstraint): string => c.param.split('.')[0];
    throw new ApiError(
      'invalid_request',
      `${name(found[0])} and ${name(found[1])} both constrain the answer; send one structured-output constraint`,
      { param: name(found[1]) },
    );
  }
  return found[0] ?? null;
}

function seedFor(seed: number, i: number): number {
  return seed + i <= Number.MAX_SAFE_INTEGER ? seed + i : seed - i;
}

/** Wire messages -> the engine's, with each image's source and field; shared by chat completions and /tokenize. */
export function planMessages(wire: ChatCompletionRequest['messages'], ctx: Pick<PlanContext, 'maxImages' | 'uploads' | 'remote'>): PlannedMessages {
  let imageCount = 0;
  const imageParams: string[] = [];
  const remote: PendingImage[] = [];
  const used = new Set<string>();
  const messages = wire.map((m, i): ChatMessage => {
    const role = m.role === 'developer' ? 'system' : m.role;
    if (typeof m.content === 'string') return { role, content: m.content };
    const content = m.content.map((part, j): ContentPart => {
      const param = `messages[${i}].content[${j}]`;
      if (part.type === 'text') return { type: 'text', text: part.text };
      if (role !== 'user') throw new ApiError('invalid_request', `${param}: images are only allowed in user messages`, { param });
      if (++imageCount > ctx.maxImages) {
        throw new ApiError('too_many_images', `at most ${ctx.maxImages} images per request`, { param });
      }
      const urlParam = `${param}.image_url.url`;
      const image = imageFromUrl(part.image_url.url, urlParam, ctx.uploads, ctx.remote ?? null);
      if (image.kind === 'remote') {
        const pending: PendingImage = { part: { type: 'image', data: new Uint8Array(0) }, url: image.url, param: urlParam };
        remote.push(pending);
        imageParams.push(urlParam);
        return pending.part;
      }
      if (image.upload !== null) used.add(image.upload);
      imageParams.push(image.upload ?? urlParam);
      return { type: 'image', data: image.data };
    });
    return { role, content };
  });
  const unused = [...(ctx.uploads?.keys() ?? [])].filter((k) => !used.has(k));
  if (unused.length > 0) {
    throw new ApiError(
      'invalid_request',
      `uploaded file ${JSON.stringify(unused[0])} is not used by any image part; refer to it as upload://${unused[0]}`,
      { param: unused[0] },
    );
  }
  return { messages, imageCount, imageParams, remote };
}
