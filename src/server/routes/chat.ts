// POST /v1/chat/completions: validate → render the chat template (with tools) → tokenize → context check
// and admission → generate, answered as one JSON object or as `chat.completion.chunk` SSE events (role
// first, content deltas, an empty delta carrying finish_reason, optional usage chunk with choices: [],
// `data: [DONE]`). Invariant: streamed and non-streamed answers carry the same text, tool calls, finish
// reasons and usage. Must not: block on tokenization (the engine's encode is async).
import type { Hono } from 'hono';
import type { EngineDeltaEvent, EngineFinishReason, EngineLogprob, EngineTool } from '../../engine/engine-client.js';
import { normalizeMessages, toolsFor } from '../chat-messages.js';
import { chatLogprobs, newResponseId, usage, type ChatLogprobEntry } from '../format.js';
import { prepareGeneration, type Generation } from '../generation.js';
import { checkModel, readJsonBody } from '../http.js';
import type { ServerRuntime } from '../runtime.js';
import { resolveChatSampling } from '../sampling.js';
import { chatRequestSchema, parseRequest, type ChatRequest } from '../schemas.js';
import type { SseWriter } from '../sse.js';
import { parseToolCalls, ToolCallStreamer, type ParsedToolCall } from '../tool-parser.js';
import { answerGeneration, progressChunk } from './common.js';

type ChatFinishReason = EngineFinishReason | 'tool_calls';

interface ChatMeta {
  id: string;
  created: number;
  model: string;
}

export function registerChatRoutes(app: Hono, runtime: ServerRuntime): void {
  app.post('/v1/chat/completions', async (c) => {
    const req = parseRequest(chatRequestSchema, await readJsonBody(c, runtime.options.maxBodyBytes));
    checkModel(runtime, req.model);
    const tools = toolsFor(req);
    const sampling = resolveChatSampling(runtime.engine, req);
    const messages = normalizeMessages(req.messages);
    const meta: ChatMeta = { id: newResponseId('chatcmpl'), created: Math.floor(Date.now() / 1000), model: runtime.modelName };
    return answerGeneration(c, runtime, meta.id, req.stream === true, async (flight) => {
      const started = performance.now();
      const prompt = await runtime.engine.applyChatTemplate(messages, {
        addGenerationPrompt: true,
        ...(tools ? { tools } : {}),
        ...(req.chat_template_kwargs ? { variables: req.chat_template_kwargs } : {}),
      });
      const ids = await runtime.engine.encode(prompt, { addSpecialTokens: false });
      runtime.metrics.tokenizationTime.observe((performance.now() - started) / 1000);
      const gen = prepareGeneration(runtime, flight.request, meta.id, [ids], sampling, 'messages');
      return { stream: (sse) => streamChat(sse, gen, meta, req, tools), collect: () => collectChat(gen, meta, req, tools) };
    });
  });
}

interface ChoiceAcc {
  text: string;
  logprobs: EngineLogprob[];
  finishReason: EngineFinishReason | null;
  stopReason: string | number | null;
}

async function collectChat(gen: Generation, meta: ChatMeta, req: ChatRequest, tools: EngineTool[] | undefined) {
  const acc: ChoiceAcc[] = Array.from({ length: gen.n }, () => ({ text: '', logprobs: [], finishReason: null, stopReason: null }));
  for await (const { event } of gen.events()) {
    if (event.type !== 'delta') continue;
    const a = acc[event.index]!;
    a.text += event.text;
    if (event.logprobs) a.logprobs.push(...event.logprobs);
    if (event.finishReason) [a.finishReason, a.stopReason] = [event.finishReason, event.stopReason ?? null];
  }
  return {
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    choices: acc.map((a, index) => {
      const parsed = tools ? parseToolCalls(a.text) : { content: a.text, toolCalls: [] as ParsedToolCall[] };
      const called = parsed.toolCalls.length > 0;
      const finish: ChatFinishReason = called ? 'tool_calls' : (a.finishReason ?? 'abort');
      return {
        index,
        message: { role: 'assistant', content: parsed.content, ...(called ? { tool_calls: parsed.toolCalls } : {}) },
        logprobs: req.logprobs ? { content: chatLogprobs(a.logprobs) } : null,
        finish_reason: finish,
        stop_reason: a.stopReason,
      };
    }),
    usage: usage(gen.numPromptTokens, gen.numCompletionTokens),
  };
}

async function streamChat(sse: SseWriter, gen: Generation, meta: ChatMeta, req: ChatRequest, tools: EngineTool[] | undefined): Promise<void> {
  const includeUsage = req.stream_options?.include_usage === true;
  const includeProgress = req.stream_options?.include_progress === true;
  const base = { id: meta.id, object: 'chat.completion.chunk', created: meta.created, model: meta.model };
  const tail = includeUsage ? { usage: null } : {};
  const chunk = (index: number, delta: Record<string, unknown>, logprobs: { content: ChatLogprobEntry[] } | null, finishReason: ChatFinishReason | null, stopReason?: string | number | null) =>
    sse.send({
      ...base,
      choices: [{ index, delta, logprobs, finish_reason: finishReason, ...(finishReason ? { stop_reason: stopReason ?? null } : {}) }],
      ...tail,
    });
  const streamers = Array.from({ length: gen.n }, () => (tools ? new ToolCallStreamer() : null));
  const progressStartMs = Date.now();

  for (let i = 0; i < gen.n; i++) await chunk(i, { role: 'assistant', content: '' }, null, null);
  for await (const { event } of gen.events()) {
    if (event.type === 'progress') {
      if (includeProgress) await sse.send(progressChunk(base, event, progressStartMs, tail));
      continue;
    }
    if (event.type !== 'delta') continue;
    await chatDelta(event, streamers[event.index] ?? null, req.logprobs === true, chunk);
  }
  if (includeUsage) await sse.send({ ...base, choices: [], usage: usage(gen.numPromptTokens, gen.numCompletionTokens) });
}

type ChunkFn = (
  index: number,
  delta: Record<string, unknown>,
  logprobs: { content: ChatLogprobEntry[] } | null,
  finishReason: ChatFinishReason | null,
  stopReason?: string | number | null,
) => Promise<void>;

async function chatDelta(event: EngineDeltaEvent, streamer: ToolCallStreamer | null, wantLogprobs: boolean, chunk: ChunkFn): Promise<void> {
  const text = streamer ? streamer.push(event.text) : event.text;
  const lp = wantLogprobs && event.logprobs && event.logprobs.length > 0 ? { content: chatLogprobs(event.logprobs) } : null;
  if (text.length > 0 || lp) await chunk(event.index, { content: text }, lp, null);
  if (!event.finishReason) return;
  let finish: ChatFinishReason = event.finishReason;
  if (streamer) {
    const rest = streamer.finish();
    if (rest.content.length > 0) await chunk(event.index, { content: rest.content }, null, null);
    if (rest.toolCalls.length > 0) {
      await chunk(event.index, { tool_calls: rest.toolCalls.map((tc, k) => ({ index: k, ...tc })) }, null, null);
      finish = 'tool_calls';
    }
  }
  await chunk(event.index, {}, null, finish, event.stopReason);
}
