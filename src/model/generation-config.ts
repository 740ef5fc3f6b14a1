// Reads the optional generation_config.json of a model directory into typed sampling defaults, and
// resolves the set of end-of-sequence ids an engine should stop on.
// Invariant: a field is undefined exactly when the file does not set it (or sets it to null); a present
// but ill-typed field is a UserError naming the file and the key. Must not: invent defaults.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import type { ModelConfig } from './config-types.js';

export interface GenerationDefaults {
  doSample?: boolean; // do_sample (false means greedy in Hugging Face)
  temperature?: number; // temperature (>= 0)
  topP?: number; // top_p (0, 1]
  topK?: number; // top_k (integer >= 0; 0 disables)
  minP?: number; // min_p [0, 1]
  repetitionPenalty?: number; // repetition_penalty (> 0)
  presencePenalty?: number; // presence_penalty
  frequencyPenalty?: number; // frequency_penalty
  maxNewTokens?: number; // max_new_tokens
  eosTokenIds?: number[]; // eos_token_id (number or list), deduplicated
  bosTokenId?: number; // bos_token_id
}

export const GENERATION_CONFIG_FILE = 'generation_config.json';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseGenerationConfig(json: unknown, file: string): GenerationDefaults {
  if (!isObject(json)) throw new UserError(`${file}: must be a JSON object`);
  const fail = (key: string, what: string): never => {
    throw new UserError(`${file}: "${key}" must be ${what}, got ${JSON.stringify(json[key])}`);
  };
  const num = (key: string, ok: (v: number) => boolean, what: string): number | undefined => {
    const v = json[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail(key, what);
    return v as number;
  };
  const out: GenerationDefaults = {};
  const set = <K extends keyof GenerationDefaults>(k: K, v: GenerationDefaults[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  if (json.do_sample !== undefined && json.do_sample !== null) {
    if (typeof json.do_sample !== 'boolean') fail('do_sample', 'true or false');
    out.doSample = json.do_sample as boolean;
  }
  set('temperature', num('temperature', (v) => v >= 0, 'a number >= 0'));
  set('topP', num('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]'));
  set('topK', num('top_k', (v) => Number.isSafeInteger(v) && v >= 0, 'an integer >= 0'));
  set('minP', num('min_p', (v) => v >= 0 && v <= 1, 'a number in [0, 1]'));
  set('repetitionPenalty', num('repetition_penalty', (v) => v > 0, 'a number > 0'));
  set('presencePenalty', num('presence_penalty', () => true, 'a number'));
  set('frequencyPenalty', num('frequency_penalty', () => true, 'a number'));
  set('maxNewTokens', num('max_new_tokens', (v) => Number.isSafeInteger(v) && v > 0, 'a positive integer'));
  set('bosTokenId', num('bos_token_id', (v) => Number.isSafeInteger(v) && v >= 0, 'a token id'));
  const eos = json.eos_token_id;
  if (eos !== undefined && eos !== null) {
    const list = Array.isArray(eos) ? eos : [eos];
    if (!list.every((v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) fail('eos_token_id', 'a token id or a list of token ids');
    out.eosTokenIds = [...new Set(list as number[])];
  }
  return out;
}

/** Reads `<dir>/generation_config.json`; an absent file gives `{}`. */
export function readGenerationConfig(dir: string): GenerationDefaults {
  const file = path.join(dir, GENERATION_CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return {};
    throw new UserError(`${file}: cannot read (${code ?? String(e)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseGenerationConfig(json, file);
}

/**
 * The ids that end generation: generation_config's eos list (or config.json's when it has none), plus the
 * tokenizer's eos token (tokenizer_config.json's eos_token) when given. Deduplicated, in that order.
 */
export function resolveEosTokenIds(
  config: Pick<ModelConfig, 'eosTokenIds'>,
  generation: GenerationDefaults,
  tokenizerEosIds: readonly number[] = [],
): number[] {
  const base = generation.eosTokenIds && generation.eosTokenIds.length > 0 ? generation.eosTokenIds : config.eosTokenIds;
  return [...new Set([...base, ...tokenizerEosIds])];
}
