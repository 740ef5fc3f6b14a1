// The contract between the HTTP server (src/server/) and an inference engine: tokenization, chat
// templates, generation as an async stream of events, abort, stats and liveness. The server imports
// nothing else from the engine, so a fake (fake-engine.ts), the in-process engine, or a remote one can
// stand behind it. Invariant: every method that may take long is async and must not block the event loop
// (tokenizing a 1M-token prompt happens off-thread or in native code). Must not: import server code.
import type { GenerationDefaults } from '../model/generation-config.js';
import type { SamplingParams } from '../sampling/sampling-params.js';

// ---------------------------------------------------------------------------------------------------
// Sampling parameters
// ---------------------------------------------------------------------------------------------------

/**
 * Fully resolved sampling parameters of one request: src/sampling/sampling-params.ts's `SamplingParams`
 * (every field set and in range; see that file for each field's range and default). The server builds it
 * with resolveSamplingParams(request, engine.generationDefaults, { defaultMaxTokens }) and also guarantees
 * promptTokenIds.length + maxTokens <= maxModelLen and stopTokenIds inside [0, vocabSize).
 * The engine must honour every field; `n` choices share the prompt's KV blocks; choice i of a seeded
 * request draws from a stream derived from (seed, i).
 */
export type EngineSamplingParams = SamplingParams;

// ---------------------------------------------------------------------------------------------------
// Chat templates
// ---------------------------------------------------------------------------------------------------

/** One tool call of an assistant message, with arguments already parsed from JSON (the server does that). */
export interface EngineToolCall {
  id?: string;
  type: 'function';
  function: { name: string; arguments: Record<string, unknown> | unknown };
}

/**
 * A chat message as the template sees it. The server normalizes OpenAI messages before calling the engine:
 * content parts are joined into one string ('\n' between text parts), `developer` becomes `system`,
 * tool_calls' arguments are parsed objects. `content` is '' when the OpenAI message had null/absent content.
 */
export interface EngineChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  name?: string;
  tool_calls?: EngineToolCall[];
  tool_call_id?: string;
}

/** An OpenAI tool definition, passed to the template unchanged (`tools` variable of the Jinja template). */
export interface EngineTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

export interface ChatTemplateOptions {
  /** Tool definitions to render (omitted or empty: the template renders no tools section). */
  tools?: EngineTool[];
  /** Append the assistant header (e.g. "<|im_start|>assistant\n") so the model answers. The server passes true. */
  addGenerationPrompt: boolean;
  /** Extra template variables (vLLM's `chat_template_kwargs`, e.g. { enable_thinking: false }). Default {}. */
  variables?: Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------------

/**
 * Why a choice finished. 'stop': EOS, a stop string or a stop token id; 'length': maxTokens reached
 * (or the context filled up); 'abort': the request was aborted (signal, abort(), or engine shutdown).
 */
export type EngineFinishReason = 'stop' | 'length' | 'abort';

/** One candidate token of a logprobs entry. */
export interface EngineTopLogprob {
  tokenId: number;
  /** The token's text as the tokenizer decodes it alone. A token that is an incomplete UTF-8 sequence is
   * written `bytes:\xNN...` (vLLM's convention), so it is always a valid JS string. */
  token: string;
  /** Natural log of the token's probability under the distribution that was sampled from (<= 0). */
  logprob: number;
}

/** Logprobs of one generated token: the sampled token plus the top-k alternatives (k = params.logprobs). */
export interface EngineLogprob extends EngineTopLogprob {
  /** Exactly k entries (fewer only if the vocabulary is smaller), most likely first. May include the sampled token. */
  top: EngineTopLogprob[];
}

/** Emitted once, when the scheduler first gives the request KV blocks (it leaves the waiting queue). */
export interface EngineScheduledEvent {
  type: 'scheduled';
  /** Milliseconds the request spent waiting in the engine's queue (>= 0). */
  queueTimeMs: number;
  /** Prompt tokens found in the prefix cache (0 when prefix caching is off); they need no prefill compute. */
  numCachedPromptTokens: number;
}

/**
 * Prefill progress, emitted after each prefill chunk of the request (at least once before the first
 * token when the prompt needs compute). numComputedPromptTokens counts cached tokens too, so it rises
 * from numCachedPromptTokens to numPromptTokens.
 */
export interface EngineProgressEvent {
  type: 'progress';
  /** Prompt tokens whose KV is in the cache so far (cached + computed); 0..numPromptTokens. */
  numComputedPromptTokens: number;
  /** Total prompt tokens of the request (= promptTokenIds.length). */
  numPromptTokens: number;
  /** Prompt tokens that came from the prefix cache. */
  numCachedPromptTokens: number;
}

/**
 * New output of one choice. Deltas of one choice arrive in order; deltas of different choices interleave.
 * Concatenating a choice's `text` gives its final text (never containing a stop string or a split UTF-8
 * character); concatenating `tokenIds` gives every generated token id (including a final EOS / stop token).
 */
export interface EngineDeltaEvent {
  type: 'delta';
  /** Choice index in [0, params.n). */
  index: number;
  /** New text since the previous delta of this choice ('' allowed, e.g. for an EOS token or held-back text). */
  text: string;
  /** Token ids generated since the previous delta of this choice (may be empty on a final abort delta). */
  tokenIds: number[];
  /** One entry per id in tokenIds when params.logprobs !== null; absent otherwise. */
  logprobs?: EngineLogprob[];
  /** null while the choice runs; set on its last delta (exactly one per choice). */
  finishReason: EngineFinishReason | null;
  /** On a finish by stop: the stop string or stop token id that matched; null for EOS or other reasons. */
  stopReason?: string | number | null;
}

export type EngineEvent = EngineScheduledEvent | EngineProgressEvent | EngineDeltaEvent;

export interface GenerateRequest {
  /** Unique among in-flight requests (the server uses its response id, e.g. "chatcmpl-…", plus "-k" for batches). */
  requestId: string;
  /** The prompt, already tokenized; 1 <= length, every id in [0, vocabSize). length + params.maxTokens <= maxModelLen. */
  promptTokenIds: readonly number[];
  params: EngineSamplingParams;
  /**
   * Aborting it aborts the request, exactly like abort(requestId): between engine steps (including between
   * prefill chunks) the request is dropped and its KV blocks freed; each unfinished choice gets a final
   * delta with finishReason 'abort', then the iterable completes.
   */
  signal?: AbortSignal;
  /** When the server received the request (Date.now() ms); queue time is measured from it. Default: now. */
  arrivalTimeMs?: number;
}

// ---------------------------------------------------------------------------------------------------
// Errors the engine may throw
// ---------------------------------------------------------------------------------------------------

/** Why the engine refused a request; the server maps each to an HTTP error of its catalogue. */
export type EngineRejectCode =
  | 'context_length_exceeded' // prompt + maxTokens > maxModelLen (the server checks first; engines check again)
  | 'invalid_token_id' // a prompt id outside [0, vocabSize)
  | 'invalid_request' // any other bad input (e.g. empty prompt)
  | 'queue_full' // the engine's own queue bound
  | 'shutting_down'; // shutdown() has begun

/**
 * Thrown by generate() (synchronously on the first next(), before any event) when the engine refuses
 * the request. Any other error thrown by an engine method is an engine bug (the server answers 500).
 * Template or tokenizer problems caused by the input (e.g. a template's raise_exception) are thrown as
 * UserError (src/errors.ts) from applyChatTemplate/encode; the server answers 400 with their message.
 */
export class EngineRequestError extends Error {
  override readonly name = 'EngineRequestError';
  constructor(
    readonly code: EngineRejectCode,
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------------
// Observability
// ---------------------------------------------------------------------------------------------------

/** Prefill state of one in-flight request (for the /metrics prefill-progress gauge). */
export interface EnginePrefillProgress {
  requestId: string;
  numComputedPromptTokens: number;
  numPromptTokens: number;
}

/** A snapshot of the engine's state; cheap (O(in-flight requests)), called on every /metrics scrape. */
export interface EngineStats {
  /** Requests that hold KV blocks and are being prefilled or decoded. */
  numRequestsRunning: number;
  /** Requests accepted by generate() that wait for KV blocks or a batch slot (includes preempted ones). */
  numRequestsWaiting: number;
  /** KV cache blocks currently referenced by requests (cached-but-free prefix blocks are not counted). */
  numKvBlocksUsed: number;
  /** KV cache blocks in the pool (fixed after start). */
  numKvBlocksTotal: number;
  /** Tokens per KV block. */
  blockSize: number;
  /** Cumulative count of preemptions (a running request evicted to free blocks) since start. */
  numPreemptionsTotal: number;
  /** Cumulative prompt tokens looked up in the prefix cache since start (0 when it is off). */
  prefixCacheQueriesTotal: number;
  /** Cumulative prompt tokens found in the prefix cache since start (<= queries). */
  prefixCacheHitsTotal: number;
  /** Requests still in prefill (numComputedPromptTokens < numPromptTokens), running or waiting. */
  prefill: EnginePrefillProgress[];
}

/**
 * Liveness of the engine loop (not of the HTTP thread). The server reports unhealthy when !loopAlive, or
 * when hasWork && msSinceProgress exceeds its stall threshold.
 */
export interface EngineHealth {
  /** false once the loop has crashed or shutdown() completed. */
  loopAlive: boolean;
  /** true while any request is running or waiting. */
  hasWork: boolean;
  /** Milliseconds since the loop last completed a step or last went idle (0 while idle). */
  msSinceProgress: number;
  /** Why the loop died, when it did. */
  error?: string;
}

// ---------------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------------

export interface EngineClient {
  /** Default model name reported by the server when --served-model-name is not given (e.g. the model dir's basename). */
  readonly modelName: string;
  /** Where the model came from (a directory or "fake"); reported as `root` in /v1/models. */
  readonly modelSource: string;
  /** Largest prompt + generated token count of one request (>= 1). */
  readonly maxModelLen: number;
  /** Token ids are in [0, vocabSize). */
  readonly vocabSize: number;
  /** Ids that end generation with 'stop' unless params.ignoreEos (from tokenizer + generation_config). */
  readonly eosTokenIds: readonly number[];
  /**
   * The model's generation_config.json (parsed by src/model/generation-config.ts): its sampling fields are
   * the defaults where a request sets nothing (Qwen: temperature 0.7, top_p 0.8, top_k 20,
   * repetition_penalty 1.05). {} when the model has none.
   */
  readonly generationDefaults: GenerationDefaults;

  /** Text → ids. Special-token strings in the text become their ids. addSpecialTokens (default true) adds BOS etc. */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Promise<number[]>;
  /** Ids → text; ids must be in [0, vocabSize) (else EngineRequestError 'invalid_token_id'). skipSpecialTokens default true. */
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): Promise<string>;
  /** Renders messages (+ tools) with the model's chat template into the prompt text (special tokens as text). */
  applyChatTemplate(messages: readonly EngineChatMessage[], opts: ChatTemplateOptions): Promise<string>;

  /**
   * Starts a request. The iterable yields, in order: at most one 'scheduled', 'progress' events during
   * prefill, then 'delta' events until every choice has had its finishReason; then it completes. Breaking
   * out of the iteration (return()) aborts the request like abort(). Throws EngineRequestError when refused.
   */
  generate(request: GenerateRequest): AsyncIterable<EngineEvent>;
  /** Aborts an in-flight request (see GenerateRequest.signal). Idempotent; unknown ids are ignored. */
  abort(requestId: string): void;
  stats(): EngineStats;
  health(): EngineHealth;
  /** Aborts everything in flight, stops the loop and releases devices. Idempotent; later generate() calls throw 'shutting_down'. */
  shutdown(): Promise<void>;
}
