// Request schemas (zod v4) for every JSON endpoint, and the mapping of a zod failure to one ApiError that
// names the parameter (`messages[2].role`) and the offending value. Policy on extra keys (see README.md):
// top-level objects are strict (an unknown key is a 400 'unknown_parameter'); the harmless OpenAI keys we
// ignore are listed explicitly; nested message objects are loose (clients echo back assistant messages with
// extra fields). Must not: apply defaults that depend on the engine (sampling.ts does that).
import { z } from 'zod';
import { ApiError, showValue } from './errors.js';

export const MAX_LOGPROBS = 20;
export const MAX_N = 128;
export const MAX_STOP_STRINGS = 64;
export const MAX_STOP_STRING_CHARS = 4096;
export const MAX_JSON_DEPTH = 64;

const nullish = <T extends z.ZodType>(t: T) => t.nullable().optional();

// ---- pieces shared by chat and completions ----
const streamOptions = z.strictObject({
  include_usage: nullish(z.boolean()),
  /** longctx extension: `prompt_progress` chunks during prefill (see README.md). */
  include_progress: nullish(z.boolean()),
});

const stop = z.union([
  z.string().min(1).max(MAX_STOP_STRING_CHARS),
  z.array(z.string().min(1).max(MAX_STOP_STRING_CHARS)).max(MAX_STOP_STRINGS),
]);

const sampling = {
  model: nullish(z.string().max(512)),
  max_tokens: nullish(z.int().min(1)),
  temperature: nullish(z.number().min(0).max(2)),
  top_p: nullish(z.number().gt(0).max(1)),
  top_k: nullish(z.int().min(-1)),
  min_p: nullish(z.number().min(0).max(1)),
  repetition_penalty: nullish(z.number().gt(0).max(10)),
  presence_penalty: nullish(z.number().min(-2).max(2)),
  frequency_penalty: nullish(z.number().min(-2).max(2)),
  seed: nullish(z.int()),
  n: nullish(z.int().min(1).max(MAX_N)),
  stop: nullish(stop),
  stop_token_ids: nullish(z.array(z.int().min(0)).max(MAX_STOP_STRINGS)),
  ignore_eos: nullish(z.boolean()),
  skip_special_tokens: nullish(z.boolean()),
  include_stop_str_in_output: nullish(z.boolean()), // vLLM extension
  stream: nullish(z.boolean()),
  stream_options: nullish(streamOptions),
  logit_bias: nullish(z.record(z.string(), z.number())), // only {} / null accepted (checked in the route)
  // Accepted and ignored (they change nothing about the output): documented in README.md.
  user: nullish(z.string().max(4096)),
  metadata: nullish(z.record(z.string(), z.string())),
  store: nullish(z.boolean()),
  service_tier: nullish(z.string().max(64)),
};

// ---- chat ----
const contentPart = z.looseObject({ type: z.string(), text: z.string().optional() });
const content = z.union([z.string(), z.array(contentPart)]);
const toolCall = z.looseObject({
  id: z.string().max(256).optional(),
  type: z.literal('function').optional(),
  function: z.looseObject({ name: z.string().min(1).max(256), arguments: z.union([z.string(), z.record(z.string(), z.unknown())]) }),
});
const message = z.discriminatedUnion('role', [
  z.looseObject({ role: z.literal('system'), content, name: z.string().optional() }),
  z.looseObject({ role: z.literal('developer'), content, name: z.string().optional() }),
  z.looseObject({ role: z.literal('user'), content, name: z.string().optional() }),
  z.looseObject({
    role: z.literal('assistant'),
    content: z.union([content, z.null()]).optional(),
    name: z.string().optional(),
    tool_calls: z.array(toolCall).max(256).nullable().optional(),
  }),
  z.looseObject({ role: z.literal('tool'), content, tool_call_id: z.string().max(256).optional() }),
]);

const tool = z.strictObject({
  type: z.literal('function'),
  function: z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, _ . or -'),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    strict: nullish(z.boolean()),
  }),
});

const toolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.strictObject({ type: z.literal('function'), function: z.strictObject({ name: z.string() }) }),
]);

const responseFormat = z.looseObject({ type: z.enum(['text', 'json_object', 'json_schema']) });

export const chatRequestSchema = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1),
  max_completion_tokens: nullish(z.int().min(1)),
  logprobs: nullish(z.boolean()),
  top_logprobs: nullish(z.int().min(0).max(MAX_LOGPROBS)),
  tools: nullish(z.array(tool).max(256)),
  tool_choice: nullish(toolChoice),
  parallel_tool_calls: nullish(z.boolean()), // accepted: every <tool_call> block is returned either way
  response_format: nullish(responseFormat),
  chat_template_kwargs: nullish(z.record(z.string(), z.unknown())), // vLLM extension
});
export type ChatRequest = z.infer<typeof chatRequestSchema>;
export type ChatMessageInput = z.infer<typeof message>;

// ---- completions ----
const tokenIds = z.array(z.int().min(0)).min(1);
export const completionRequestSchema = z.strictObject({
  ...sampling,
  prompt: z.union([z.string().min(1), z.array(z.string().min(1)).min(1).max(256), tokenIds, z.array(tokenIds).min(1).max(256)]),
  logprobs: nullish(z.int().min(0).max(MAX_LOGPROBS)),
  echo: nullish(z.boolean()),
  suffix: nullish(z.string()), // only null / '' accepted (checked in the route)
  best_of: nullish(z.int().min(1).max(MAX_N)), // only equal to n accepted
});
export type CompletionRequest = z.infer<typeof completionRequestSchema>;

// ---- tokenize / detokenize (vLLM's shapes) ----
export const tokenizeRequestSchema = z.union([
  z.strictObject({ model: nullish(z.string()), prompt: z.string(), add_special_tokens: nullish(z.boolean()), return_token_strs: nullish(z.boolean()) }),
  z.strictObject({
    model: nullish(z.string()),
    messages: z.array(message).min(1),
    add_generation_prompt: nullish(z.boolean()),
    add_special_tokens: nullish(z.boolean()),
    return_token_strs: nullish(z.boolean()),
    tools: nullish(z.array(tool).max(256)),
    chat_template_kwargs: nullish(z.record(z.string(), z.unknown())),
  }),
]);
export type TokenizeRequest = z.infer<typeof tokenizeRequestSchema>;

export const detokenizeRequestSchema = z.strictObject({ model: nullish(z.string()), tokens: z.array(z.int().min(0)) });

// ---- turning a zod failure into one clear ApiError ----

type Issue = z.core.$ZodIssue;

function paramOf(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s;
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let v = body;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** The most specific issue: unions are resolved to the branch whose failure is deepest / not a type mismatch. */
function pickIssue(issues: readonly Issue[], prefix: readonly PropertyKey[] = []): { issue: Issue; path: PropertyKey[] } {
  const issue = issues[0]!;
  const path = [...prefix, ...issue.path];
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const branches = issue.errors.filter((b) => b.length > 0).map((b) => pickIssue(b, path));
    const score = (c: { issue: Issue; path: PropertyKey[] }) => c.path.length * 2 + (c.issue.code === 'invalid_type' ? 0 : 1);
    branches.sort((a, b) => score(b) - score(a));
    if (branches.length > 0 && score(branches[0]!) > path.length * 2) return branches[0]!;
  }
  return { issue, path };
}

function describe(issue: Issue, value: unknown): string {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${issue.expected === 'int' ? 'an integer' : issue.expected}, got ${typeName(value)}${typeof value === 'number' ? ` ${value}` : ''}`;
    case 'too_small': {
      const min = String(issue.minimum);
      if (issue.origin === 'array') return `must have at least ${min} item(s)`;
      if (issue.origin === 'string') return `must be at least ${min} character(s) long`;
      return `must be ${issue.inclusive ? '>=' : '>'} ${min} (got ${showValue(value)})`;
    }
    case 'too_big': {
      const max = String(issue.maximum);
      if (issue.origin === 'array') return `must have at most ${max} item(s)`;
      if (issue.origin === 'string') return `must be at most ${max} character(s) long`;
      return `must be ${issue.inclusive ? '<=' : '<'} ${max} (got ${showValue(value)})`;
    }
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')} (got ${showValue(value)})`;
    case 'invalid_union':
      if ('discriminator' in issue && issue.discriminator) {
        const opts = (issue as unknown as { options?: unknown[] }).options ?? [];
        return `must be one of ${opts.map((o) => JSON.stringify(o)).join(', ')} (got ${showValue(value)})`;
      }
      {
        const expected = issue.errors.map((b) => (b.length === 1 && b[0]!.code === 'invalid_type' && b[0]!.path.length === 0 ? b[0]!.expected : null));
        if (expected.every((e) => e !== null)) return `expected ${[...new Set(expected)].join(' or ')}, got ${typeName(value)} ${showValue(value)}`;
      }
      return `has the wrong type or shape (got ${showValue(value)})`;
    default:
      return `${issue.message} (got ${showValue(value)})`;
  }
}

/** Validates `body` against `schema`; throws an ApiError naming the first offending parameter. */
export function parseRequest<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  if (typeName(body) !== 'object') throw new ApiError('invalid_parameter', `The request body must be a JSON object, got ${typeName(body)}.`, null);
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const unknown = findUnknownKeys(r.error.issues);
  if (unknown) throw new ApiError('unknown_parameter', `Unrecognized request argument supplied: ${unknown.key}`, unknown.param);
  const { issue, path } = pickIssue(r.error.issues);
  const param = paramOf(path);
  const value = valueAt(body, path);
  if (value === undefined && (issue.code === 'invalid_type' || issue.code === 'invalid_union')) throw new ApiError('invalid_parameter', `Missing required parameter: '${param}'.`, param);
  throw new ApiError('invalid_parameter', `Invalid value for '${param}': ${describe(issue, value)}.`, param);
}

function findUnknownKeys(issues: readonly Issue[]): { key: string; param: string } | null {
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const key = issue.keys[0]!;
      return { key: paramOf([...issue.path, key]), param: paramOf([...issue.path, key]) };
    }
  }
  return null;
}

/** Throws unless every container in `value` is nested at most `maxDepth` deep (iterative: no stack overflow). */
export function checkJsonDepth(value: unknown, maxDepth = MAX_JSON_DEPTH): void {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > maxDepth) throw new ApiError('invalid_json', `The request body is nested more than ${maxDepth} levels deep.`, null);
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
}
