// resolveSamplingParams: precedence (request > generation_config.json > built-ins), null as "unset", and a
// UserError naming the parameter, its range and the value for every out-of-range field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UserError } from '../../src/errors.js';
import { parseGenerationConfig } from '../../src/model/generation-config.js';
import {
  DEFAULT_MAX_TOKENS,
  MAX_LOGPROBS,
  resolveSamplingParams,
  samplingDefaultsFromGenerationConfig,
  type SamplingRequest,
} from '../../src/sampling/sampling-params.js';

const QWEN_GC = parseGenerationConfig(
  { do_sample: true, eos_token_id: [151645, 151643], repetition_penalty: 1.05, temperature: 0.7, top_k: 20, top_p: 0.8 },
  'generation_config.json',
);

test('built-in defaults are vLLM-like and neutral', () => {
  assert.deepEqual(resolveSamplingParams({}), {
    temperature: 1,
    topP: 1,
    topK: -1,
    minP: 0,
    repetitionPenalty: 1,
    presencePenalty: 0,
    frequencyPenalty: 0,
    seed: null,
    maxTokens: DEFAULT_MAX_TOKENS,
    stop: [],
    stopTokenIds: [],
    ignoreEos: false,
    n: 1,
    logprobs: null,
    includeStopStrInOutput: false,
    skipSpecialTokens: true,
  });
  assert.equal(resolveSamplingParams({}, {}, { defaultMaxTokens: 1000 }).maxTokens, 1000);
});

test('generation_config.json fills what the request leaves unset; the request wins; null means unset', () => {
  const p = resolveSamplingParams({}, QWEN_GC);
  assert.equal(p.temperature, 0.7);
  assert.equal(p.topP, 0.8);
  assert.equal(p.topK, 20);
  assert.equal(p.repetitionPenalty, 1.05);
  assert.equal(p.minP, 0);
  const q = resolveSamplingParams({ temperature: 0, topK: -1, topP: null, repetitionPenalty: undefined }, QWEN_GC);
  assert.equal(q.temperature, 0);
  assert.equal(q.topK, -1);
  assert.equal(q.topP, 0.8);
  assert.equal(q.repetitionPenalty, 1.05);
  // max_new_tokens is a default for max_tokens and beats the caller's fallback
  const withMax = parseGenerationConfig({ max_new_tokens: 512 }, 'g.json');
  assert.equal(resolveSamplingParams({}, withMax, { defaultMaxTokens: 9000 }).maxTokens, 512);
  assert.equal(resolveSamplingParams({ maxTokens: 7 }, withMax).maxTokens, 7);
  assert.deepEqual(samplingDefaultsFromGenerationConfig(withMax), { maxTokens: 512 });
});

test('stop: one string or a list (deduplicated); stop_token_ids deduplicated', () => {
  assert.deepEqual(resolveSamplingParams({ stop: 'END' }).stop, ['END']);
  assert.deepEqual(resolveSamplingParams({ stop: ['a', 'b', 'a'] }).stop, ['a', 'b']);
  assert.deepEqual(resolveSamplingParams({ stopTokenIds: [5, 5, 0] }).stopTokenIds, [5, 0]);
  assert.deepEqual(resolveSamplingParams({ stop: null, stopTokenIds: null }).stop, []);
});

test('accepted edge values', () => {
  const p = resolveSamplingParams({
    temperature: 0,
    topP: 1,
    topK: 0,
    minP: 1,
    repetitionPenalty: 0.01,
    presencePenalty: -2,
    frequencyPenalty: 2,
    seed: -5,
    maxTokens: 1,
    n: 3,
    logprobs: MAX_LOGPROBS,
  });
  assert.equal(p.seed, -5);
  assert.equal(p.logprobs, 20);
  assert.equal(resolveSamplingParams({ logprobs: 0 }).logprobs, 0);
});

const BAD: [SamplingRequest, string][] = [
  [{ topP: 1.5 }, 'top_p must be in (0, 1], got 1.5'],
  [{ topP: 0 }, 'top_p must be in (0, 1], got 0'],
  [{ temperature: -0.1 }, 'temperature must be a finite number >= 0, got -0.1'],
  [{ temperature: Infinity }, 'temperature must be a finite number >= 0, got Infinity'],
  [{ temperature: NaN }, 'temperature must be a finite number >= 0, got NaN'],
  [{ topK: -2 }, 'top_k must be -1 or 0 (disabled) or an integer >= 1, got -2'],
  [{ topK: 2.5 }, 'top_k must be -1 or 0 (disabled) or an integer >= 1, got 2.5'],
  [{ minP: 1.01 }, 'min_p must be in [0, 1], got 1.01'],
  [{ minP: -0.5 }, 'min_p must be in [0, 1], got -0.5'],
  [{ repetitionPenalty: 0 }, 'repetition_penalty must be a finite number > 0, got 0'],
  [{ presencePenalty: 2.5 }, 'presence_penalty must be in [-2, 2], got 2.5'],
  [{ frequencyPenalty: -3 }, 'frequency_penalty must be in [-2, 2], got -3'],
  [{ seed: 1.5 }, 'seed must be an integer, got 1.5'],
  [{ maxTokens: 0 }, 'max_tokens must be an integer >= 1, got 0'],
  [{ n: 0 }, 'n must be an integer >= 1, got 0'],
  [{ logprobs: 21 }, 'logprobs must be an integer in [0, 20] or null, got 21'],
  [{ logprobs: -1 }, 'logprobs must be an integer in [0, 20] or null, got -1'],
  [{ stop: [''] }, 'stop must be a non-empty string or a list of non-empty strings, got [""]'],
  [{ stop: '' }, 'stop must be a non-empty string or a list of non-empty strings, got ""'],
  [{ stopTokenIds: [-1] }, 'stop_token_ids must be a list of token ids (integers >= 0), got [-1]'],
  [{ ignoreEos: 'yes' as unknown as boolean }, 'ignore_eos must be true or false, got "yes"'],
  [{ topP: '0.5' as unknown as number }, 'top_p must be in (0, 1], got "0.5"'],
];

for (const [request, message] of BAD) {
  test(`rejects ${JSON.stringify(request) ?? String(request)} with "${message}"`, () => {
    assert.throws(
      () => resolveSamplingParams(request),
      (e: unknown) => e instanceof UserError && e.message === message,
    );
  });
}

test('a bad value from generation_config.json names its origin', () => {
  // parseGenerationConfig accepts top_k 0..∞ and temperature >= 0; craft an out-of-range object directly
  assert.throws(
    () => resolveSamplingParams({}, { topP: 2 }),
    (e: unknown) => e instanceof UserError && e.message === 'top_p must be in (0, 1], got 2 (from generation_config.json)',
  );
  // a valid request value overrides the invalid default, so nothing throws
  assert.equal(resolveSamplingParams({ topP: 0.5 }, { topP: 2 }).topP, 0.5);
});
