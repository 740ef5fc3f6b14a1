// POST /v1/completions: prompts as a string, a list of strings, a list of token ids or a list of lists;
// each prompt runs as its own engine request with n choices (choice index = prompt × n + choice).
// Answered as one `text_completion` object or as SSE chunks (finish_reason on each choice's last chunk,
// optional usage chunk with choices: [], `data: [DONE]`). Invariant: token-id prompts are checked
// against the vocabulary (400) before reaching the engine. Must not: truncate a prompt.
import type { Hono } from 'hono';
import type { EngineFinishReason } from '../../engine/engine-client.js';
import { ApiError } from '../errors.js';
import { CompletionLogprobsBuilder, mergeCompletionLogprobs, newResponseId, usage, type CompletionLogprobs } from '../format.js';
import { prepareGeneration, type Generation } from '../generation.js';
import { checkModel, readJsonBody } from '../http.js';
import type { ServerRuntime } from '../runtime.js';
import { resolveCompletionSampling } from '../sampling.js';
import { completionRequestSchema, parseRequest, type CompletionRequest } from '../schemas.js';
import type { SseWriter } from '../sse.js';
import { answerGeneration, progressChunk } from './common.js';

interface Meta {
  id: string;
  created: number;
  model: string;
}

type PromptInput = { text: string } | { ids: number[] };

function promptInputs(prompt: CompletionRequest['prompt']): PromptInput[] {
  if (typeof prompt === 'string') return [{ text: prompt }];
  if (prompt.length > 0 && typeof prompt[0] === 'number') return [{ ids: prompt as number[] }];
  return (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? { text: p } : { ids: p }));
}

export function registerCompletionRoutes(app: Hono, runtime: ServerRuntime): void {
  app.post('/v1/completions', async (c) => {
    const req = parseRequest(completionRequestSchema, await readJsonBody(c, runtime.options.maxBodyBytes));
    checkModel(runtime, req.model);
    const sampling = resolveCompletionSampling(runtime.engine, req);
    const inputs = promptInputs(req.prompt);
    const vocab = runtime.engine.vocabSize;
    for (const [k, p] of inputs.entries()) {
      const bad = 'ids' in p ? p.ids.find((id) => id >= vocab) : undefined;
      if (bad !== undefined) {
        const param = inputs.length > 1 ? `prompt[${k}]` : 'prompt';
        throw new ApiError('invalid_token_id', `Invalid value for '${param}': token id ${bad} is outside the vocabulary [0, ${vocab}).`, param);
      }
    }
    const meta: Meta = { id: newResponseId('cmpl'), created: Math.floor(Date.now() / 1000), model: runtime.modelName };
    return answerGeneration(c, runtime, meta.id, req.stream === true, async (flight) => {
      const started = performance.now();
      const prompts = await Promise.all(inputs.map((p) => ('ids' in p ? p.ids : runtime.engine.encode(p.text, { addSpecialTokens: true }))));
      runtime.metrics.tokenizationTime.observe((performance.now() - started) / 1000);
      const echoes = req.echo
        ? await Promise.all(inputs.map((p) => ('text' in p ? p.text : runtime.engine.decode(p.ids, { skipSpecialTokens: false }))))
        : null;
      const gen = prepareGeneration(runtime, flight.request, meta.id, prompts, sampling, 'prompt');
      return { stream: (sse) => streamCompletion(sse, gen, meta, req, echoes), collect: () => collectCompletion(gen, meta, req, echoes) };
    });
  });
}

interface ChoiceAcc {
  text: string;
  logprobs: CompletionLogprobs[];
  builder: CompletionLogprobsBuilder;
  finishReason: EngineFinishReason | null;
  stopReason: string | number | null;
}

async function collectCompletion(gen: Generation, meta: Meta, req: CompletionRequest, echoes: string[] | null) {
  const n = gen.n;
  const acc: ChoiceAcc[] = Array.from({ length: gen.prompts.length * n }, (_, k) => {
    const echo = echoes?.[Math.floor(k / n)] ?? '';
    return { text: echo, logprobs: [], builder: new CompletionLogprobsBuilder(echo.length), finishReason: null, stopReason: null };
  });
  for await (const { prompt, event } of gen.events()) {
    if (event.type !== 'delta') continue;
    const a = acc[prompt * n + event.index]!;
    a.text += event.text;
    if (event.logprobs) a.logprobs.push(a.builder.build(event.logprobs));
    if (event.finishReason) [a.finishReason, a.stopReason] = [event.finishReason, event.stopReason ?? null];
  }
  return {
    id: meta.id,
    object: 'text_completion',
    created: meta.created,
    model: meta.model,
    choices: acc.map((a, index) => ({
      index,
      text: a.text,
      logprobs: req.logprobs !== null && req.logprobs !== undefined ? mergeCompletionLogprobs(a.logprobs) : null,
      finish_reason: a.finishReason ?? 'abort',
      stop_reason: a.stopReason,
    })),
    usage: usage(gen.numPromptTokens, gen.numCompletionTokens),
  };
}

async function streamCompletion(sse: SseWriter, gen: Generation, meta: Meta, req: CompletionRequest, echoes: string[] | null): Promise<void> {
  const n = gen.n;
  const includeUsage = req.stream_options?.include_usage === true;
  const includeProgress = req.stream_options?.include_progress === true;
  const wantLogprobs = req.logprobs !== null && req.logprobs !== undefined;
  const base = { id: meta.id, object: 'text_completion', created: meta.created, model: meta.model };
  const tail = includeUsage ? { usage: null } : {};
  const builders = Array.from({ length: gen.prompts.length * n }, (_, k) => new CompletionLogprobsBuilder(echoes?.[Math.floor(k / n)]?.length ?? 0));
  const echoed = new Set<number>();
  const startMs = Date.now();

  for await (const { prompt, event } of gen.events()) {
    if (event.type === 'progress') {
      if (includeProgress) await sse.send(progressChunk(base, event, startMs, tail, { prompt_index: prompt }));
      continue;
    }
    if (event.type !== 'delta') continue;
    const index = prompt * n + event.index;
    let text = event.text;
    if (echoes && !echoed.has(index)) {
      echoed.add(index);
      text = echoes[prompt]! + text;
    }
    const logprobs = wantLogprobs && event.logprobs ? builders[index]!.build(event.logprobs) : null;
    if (text.length === 0 && !logprobs && !event.finishReason) continue;
    await sse.send({
      ...base,
      choices: [{ index, text, logprobs, finish_reason: event.finishReason, ...(event.finishReason ? { stop_reason: event.stopReason ?? null } : {}) }],
      ...tail,
    });
  }
  if (includeUsage) await sse.send({ ...base, choices: [], usage: usage(gen.numPromptTokens, gen.numCompletionTokens) });
}
