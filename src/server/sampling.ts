// Turns validated OpenAI request fields into the engine's sampling params through the project's one
// resolver (src/sampling/sampling-params.ts: request > generation_config.json > built-in defaults).
// Invariant: cross-field rules (top_logprobs needs logprobs, best_of == n, stream_options needs stream,
// stop token ids inside the vocabulary) are 400s naming the parameter; max_tokens left unset means "the
// rest of the context" (capped by generation_config's max_new_tokens). Must not: tokenize.
import type { EngineClient, EngineSamplingParams } from '../engine/engine-client.js';
import { isUserError } from '../errors.js';
import { resolveSamplingParams, type SamplingRequest } from '../sampling/sampling-params.js';
import { ApiError } from './errors.js';
import type { ChatRequest, CompletionRequest } from './schemas.js';

/** The request's sampling fields; params are resolved per prompt (maxTokens depends on its length). */
export interface BaseSampling {
  request: SamplingRequest;
  /** max_completion_tokens ?? max_tokens; null: fill the context (max_model_len - prompt tokens). */
  maxTokens: number | null;
  /** The full params for a prompt of this many tokens (call after the context check). */
  forPrompt(numPromptTokens: number): EngineSamplingParams;
}

type Common = ChatRequest | CompletionRequest;

function build(engine: EngineClient, r: Common, logprobs: number | null, maxTokens: number | null): BaseSampling {
  if (r.logit_bias && Object.keys(r.logit_bias).length > 0) {
    throw new ApiError('unsupported_parameter', "'logit_bias' is not supported by this server yet.", 'logit_bias');
  }
  if (r.stream_options && !r.stream) {
    throw new ApiError('invalid_parameter', "'stream_options' is only allowed when 'stream' is true.", 'stream_options');
  }
  const bad = r.stop_token_ids?.find((id) => id >= engine.vocabSize);
  if (bad !== undefined) {
    throw new ApiError('invalid_parameter', `Invalid value for 'stop_token_ids': token id ${bad} is outside the vocabulary [0, ${engine.vocabSize}).`, 'stop_token_ids');
  }
  const request: SamplingRequest = {
    temperature: r.temperature,
    topP: r.top_p,
    topK: r.top_k,
    minP: r.min_p,
    repetitionPenalty: r.repetition_penalty,
    presencePenalty: r.presence_penalty,
    frequencyPenalty: r.frequency_penalty,
    seed: r.seed,
    maxTokens,
    stop: r.stop,
    stopTokenIds: r.stop_token_ids,
    ignoreEos: r.ignore_eos,
    n: r.n,
    logprobs,
    includeStopStrInOutput: r.include_stop_str_in_output,
    skipSpecialTokens: r.skip_special_tokens,
  };
  const resolve = (numPromptTokens: number): EngineSamplingParams => {
    const room = Math.max(1, engine.maxModelLen - numPromptTokens);
    try {
      const p = resolveSamplingParams(request, engine.generationDefaults, { defaultMaxTokens: room });
      // Unset max_tokens: the rest of the context, or generation_config's max_new_tokens if smaller.
      return maxTokens === null ? { ...p, maxTokens: Math.min(p.maxTokens, room) } : p;
    } catch (e) {
      if (isUserError(e)) throw new ApiError('invalid_parameter', e.message, null);
      throw e;
    }
  };
  resolve(1); // surface parameter errors before any tokenization
  return { request, maxTokens, forPrompt: resolve };
}

export function resolveChatSampling(engine: EngineClient, r: ChatRequest): BaseSampling {
  if (r.top_logprobs !== null && r.top_logprobs !== undefined && !r.logprobs) {
    throw new ApiError('invalid_parameter', "'top_logprobs' requires 'logprobs' to be true.", 'top_logprobs');
  }
  return build(engine, r, r.logprobs ? (r.top_logprobs ?? 0) : null, r.max_completion_tokens ?? r.max_tokens ?? null);
}

export function resolveCompletionSampling(engine: EngineClient, r: CompletionRequest): BaseSampling {
  if (r.best_of !== null && r.best_of !== undefined && r.best_of !== (r.n ?? 1)) {
    throw new ApiError('unsupported_parameter', `'best_of' different from 'n' is not supported (best_of ${r.best_of}, n ${r.n ?? 1}).`, 'best_of');
  }
  if (r.suffix) throw new ApiError('unsupported_parameter', "'suffix' is not supported.", 'suffix');
  if (r.echo && r.logprobs !== null && r.logprobs !== undefined) {
    throw new ApiError('unsupported_parameter', "'echo' together with 'logprobs' (prompt logprobs) is not supported yet.", 'echo');
  }
  return build(engine, r, r.logprobs ?? null, r.max_tokens ?? null);
}
