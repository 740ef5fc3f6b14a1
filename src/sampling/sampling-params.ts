// Sampling parameters of one request: the fully resolved `SamplingParams` record and its resolution from
// a request (explicit value > the model's generation_config.json > built-in vLLM-like defaults).
// Invariant: a SamplingParams returned by resolveSamplingParams is in range in every field; anything out of
// range is a UserError naming the API parameter, its allowed range and the offending value.
// Must not: look at logits, tokens or text (sampler.ts / stop-checker.ts do), or read files.
import { UserError } from '../errors.js';
import type { GenerationDefaults } from '../model/generation-config.js';

/** vLLM's default --max-logprobs: the most alternatives one token may carry. */
export const MAX_LOGPROBS = 20;
/** vLLM's SamplingParams default when neither the request, generation_config nor the caller sets one. */
export const DEFAULT_MAX_TOKENS = 16;

/**
 * Fully resolved sampling parameters. Structurally a superset of EngineSamplingParams
 * (src/engine/engine-client.ts), so it can be passed wherever that is expected.
 */
export interface SamplingParams {
  /** >= 0. Below 1e-5 (vLLM's epsilon) the request is greedy: argmax, top-k/top-p/min-p ignored. Default 1. */
  temperature: number;
  /** (0, 1]. Keep the smallest most-likely set with mass >= topP; 1 disables. Default 1. */
  topP: number;
  /** -1 or 0 disables; otherwise keep the tokens whose logit is >= the k-th largest. Default -1. */
  topK: number;
  /** [0, 1]. Drop tokens whose probability is < minP × the top probability; 0 disables. Default 0. */
  minP: number;
  /** > 0. Logits of tokens seen in prompt or output: positive ÷ penalty, negative × penalty; 1 disables. */
  repetitionPenalty: number;
  /** [-2, 2]. Subtracted once from the logit of every token present in the output so far; 0 disables. */
  presencePenalty: number;
  /** [-2, 2]. Subtracted count times from the logit of a token that occurs count times in the output. */
  frequencyPenalty: number;
  /** Safe integer or null (a random seed is drawn when the request's generator is created). */
  seed: number | null;
  /** >= 1. Generated tokens per choice, the final EOS / stop token included. */
  maxTokens: number;
  /** Non-empty stop strings. Default []. */
  stop: string[];
  /** Ids that finish with 'stop' (their text is not emitted). Default []. */
  stopTokenIds: number[];
  /** EOS ids do not finish the request. Default false. */
  ignoreEos: boolean;
  /** >= 1. Independent choices per prompt. Default 1. */
  n: number;
  /** null: no logprobs; k in [0, MAX_LOGPROBS]: the sampled token's logprob plus the k best alternatives. */
  logprobs: number | null;
  /** Keep the matched stop string at the end of the text. Default false. */
  includeStopStrInOutput: boolean;
  /** Drop special added tokens (e.g. <|im_end|>) from the text. Default true. */
  skipSpecialTokens: boolean;
}

/**
 * What a request may set (camelCase; the server maps snake_case). null and undefined both mean "not set".
 * `stop` may be one string, as in the OpenAI API.
 */
export type SamplingRequest = {
  [K in Exclude<keyof SamplingParams, 'stop'>]?: SamplingParams[K] | null;
} & { stop?: string | string[] | null };

export interface ResolveOptions {
  /** maxTokens when neither the request nor generation_config's max_new_tokens sets it (the server passes
   * max_model_len − prompt length). Default DEFAULT_MAX_TOKENS. */
  defaultMaxTokens?: number;
}

/** Built-in defaults (vLLM's SamplingParams defaults), used where request and generation_config are silent. */
export const BUILTIN_SAMPLING_DEFAULTS: Readonly<Omit<SamplingParams, 'maxTokens'>> = Object.freeze({
  temperature: 1,
  topP: 1,
  topK: -1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: null,
  stop: [],
  stopTokenIds: [],
  ignoreEos: false,
  n: 1,
  logprobs: null,
  includeStopStrInOutput: false,
  skipSpecialTokens: true,
});

/**
 * The generation_config.json fields that act as sampling defaults, in SamplingParams' names. Like vLLM,
 * do_sample is not consulted (Qwen's files say true anyway); max_new_tokens becomes maxTokens.
 */
export function samplingDefaultsFromGenerationConfig(g: GenerationDefaults): Partial<SamplingParams> {
  const out: Partial<SamplingParams> = {};
  if (g.temperature !== undefined) out.temperature = g.temperature;
  if (g.topP !== undefined) out.topP = g.topP;
  if (g.topK !== undefined) out.topK = g.topK;
  if (g.minP !== undefined) out.minP = g.minP;
  if (g.repetitionPenalty !== undefined) out.repetitionPenalty = g.repetitionPenalty;
  if (g.presencePenalty !== undefined) out.presencePenalty = g.presencePenalty;
  if (g.frequencyPenalty !== undefined) out.frequencyPenalty = g.frequencyPenalty;
  if (g.maxNewTokens !== undefined) out.maxTokens = g.maxNewTokens;
  return out;
}

const show = (v: unknown): string => (typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v) ?? String(v));

/**
 * Merges request > generation_config > built-ins and validates every field. Throws UserError, e.g.
 * `top_p must be in (0, 1], got 1.5`; a bad value that came from generation_config.json says so.
 */
export function resolveSamplingParams(
  request: SamplingRequest,
  generation: GenerationDefaults = {},
  opts: ResolveOptions = {},
): SamplingParams {
  const gen = samplingDefaultsFromGenerationConfig(generation);
  const builtin: Omit<SamplingParams, 'maxTokens'> & { maxTokens: number } = {
    ...BUILTIN_SAMPLING_DEFAULTS,
    maxTokens: opts.defaultMaxTokens ?? DEFAULT_MAX_TOKENS,
  };

  /** The winning value of one field and the suffix that names its origin in an error. */
  const pick = <K extends keyof SamplingParams>(key: K): { value: unknown; origin: string } => {
    const r = (request as Record<string, unknown>)[key];
    if (r !== undefined && r !== null) return { value: r, origin: '' };
    if (gen[key] !== undefined) return { value: gen[key], origin: ' (from generation_config.json)' };
    return { value: builtin[key], origin: '' };
  };
  const fail = (name: string, range: string, v: unknown, origin: string): never => {
    throw new UserError(`${name} must be ${range}, got ${show(v)}${origin}`);
  };
  const number = (key: keyof SamplingParams, name: string, range: string, ok: (v: number) => boolean): number => {
    const { value, origin } = pick(key);
    if (typeof value !== 'number' || Number.isNaN(value) || !ok(value)) fail(name, range, value, origin);
    return value as number;
  };
  const integer = (key: keyof SamplingParams, name: string, range: string, ok: (v: number) => boolean): number =>
    number(key, name, range, (v) => Number.isSafeInteger(v) && ok(v));
  const boolean = (key: keyof SamplingParams, name: string): boolean => {
    const { value, origin } = pick(key);
    if (typeof value !== 'boolean') fail(name, 'true or false', value, origin);
    return value as boolean;
  };

  const seedPick = pick('seed');
  if (seedPick.value !== null && !(typeof seedPick.value === 'number' && Number.isSafeInteger(seedPick.value))) {
    fail('seed', 'an integer', seedPick.value, seedPick.origin);
  }
  const logprobsPick = pick('logprobs');
  const lp = logprobsPick.value;
  if (lp !== null && !(typeof lp === 'number' && Number.isSafeInteger(lp) && lp >= 0 && lp <= MAX_LOGPROBS)) {
    fail('logprobs', `an integer in [0, ${MAX_LOGPROBS}] or null`, lp, logprobsPick.origin);
  }

  return {
    temperature: number('temperature', 'temperature', 'a finite number >= 0', (v) => Number.isFinite(v) && v >= 0),
    topP: number('topP', 'top_p', 'in (0, 1]', (v) => v > 0 && v <= 1),
    topK: integer('topK', 'top_k', '-1 or 0 (disabled) or an integer >= 1', (v) => v >= -1),
    minP: number('minP', 'min_p', 'in [0, 1]', (v) => v >= 0 && v <= 1),
    repetitionPenalty: number('repetitionPenalty', 'repetition_penalty', 'a finite number > 0', (v) => Number.isFinite(v) && v > 0),
    presencePenalty: number('presencePenalty', 'presence_penalty', 'in [-2, 2]', (v) => v >= -2 && v <= 2),
    frequencyPenalty: number('frequencyPenalty', 'frequency_penalty', 'in [-2, 2]', (v) => v >= -2 && v <= 2),
    seed: seedPick.value as number | null,
    maxTokens: integer('maxTokens', 'max_tokens', 'an integer >= 1', (v) => v >= 1),
    stop: resolveStop(request.stop),
    stopTokenIds: resolveStopTokenIds(request.stopTokenIds),
    ignoreEos: boolean('ignoreEos', 'ignore_eos'),
    n: integer('n', 'n', 'an integer >= 1', (v) => v >= 1),
    logprobs: lp as number | null,
    includeStopStrInOutput: boolean('includeStopStrInOutput', 'include_stop_str_in_output'),
    skipSpecialTokens: boolean('skipSpecialTokens', 'skip_special_tokens'),
  };
}

function resolveStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new UserError(`stop must be a non-empty string or a list of non-empty strings, got ${show(v)}`);
  }
  return [...new Set(list as string[])];
}

function resolveStopTokenIds(v: unknown): number[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((id) => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0)) {
    throw new UserError(`stop_token_ids must be a list of token ids (integers >= 0), got ${show(v)}`);
  }
  return [...new Set(v as number[])];
}
